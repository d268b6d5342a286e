"""Reference cards from vendor datasheets: what a GPU can do on paper, with where each figure came from.

The projection compares measured machines against these rows, and the probes use them as the "peak"
a measurement is a fraction of. Every figure is in SI units: FLOP/s, bytes, B/s, W, USD.

Conventions (so rows compare like with like):

- FLOP/s are dense (no 2:4 sparsity); one fused multiply-add counts as two FLOPs.
- "fp16"/"bf16"/"fp8"/"tf32" are tensor-core figures. GeForce cards run FP16/BF16 tensor math at
  full rate only with FP16 accumulate; training accumulates in FP32, so their rows give the
  *FP32-accumulate* figure, which is half the headline number. Datacenter cards have no such cut.
- "fp32" is the non-tensor (CUDA core) rate; "fp64" is the FP64 tensor-core rate where the card has
  one (DGEMM runs on it), else the CUDA-core rate.
- GTX 1080 (Pascal GP104) has no tensor cores and runs FP16 at 1/64 of FP32: its fp16 row is real
  and tiny, which is the point.
- memory_bytes: NVIDIA's "GB" for these memories is GiB (an A100 80GB reports 81920 MiB), so
  sizes are datasheet GB x 2**30. Bandwidths are decimal (GB/s x 1e9), as quoted.
- nvlink_bandwidth is the total of both directions, as NVIDIA quotes it; per direction is half.
- Datacenter GPUs have no public list price: their launch_price_usd is a widely reported
  estimate, and the price source says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from bench.errors import FlopwattError

T = 1e12
GIB = 2**30
GBPS = 1e9

#: Dtype names the table uses, and the spellings torch and users also write.
DTYPES = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8")
_DTYPE_ALIASES = {
    "float64": "fp64", "double": "fp64",
    "float32": "fp32", "float": "fp32",
    "tensorfloat32": "tf32",
    "float16": "fp16", "half": "fp16",
    "bfloat16": "bf16",
    "float8": "fp8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "e4m3": "fp8", "e5m2": "fp8",
}

#: Words in device names that identify nothing (dropped before matching).
_NOISE = frozenset({"nvidia", "geforce", "gpu", "graphics", "tesla", "card"})
#: Name tokens that mark a different card of the same number (RTX 4090 D, 4090 Laptop, H100 NVL,
#: A100 40GB...). A name carrying one only matches an alias that carries it too.
_VARIANT = frozenset({"ti", "super", "d", "laptop", "mobile", "max", "q", "nvl", "pcie", "sxm", "sxm4",
                      "sxm5", "hbm2", "hbm2e", "hbm3", "hbm3e"})
_SIZE = re.compile(r"^\d+gb$")


@dataclass(frozen=True)
class Pcie:
    generation: int
    lanes: int

    @property
    def bandwidth(self) -> float:
        """Usable bytes per second per direction (after 8b/10b or 128b/130b line coding)."""
        gt_per_lane = {1: 2.5e9, 2: 5e9, 3: 8e9, 4: 16e9, 5: 32e9, 6: 64e9}[self.generation]
        efficiency = 0.8 if self.generation <= 2 else 128 / 130
        return gt_per_lane * efficiency * self.lanes / 8


@dataclass(frozen=True)
class Card:
    """One reference GPU. `sources["*"]` covers every figure without a source of its own."""

    key: str
    name: str
    aliases: tuple[str, ...]
    year: int
    peak: Mapping[str, float] = field(compare=False)
    memory_bytes: int
    memory_bandwidth: float
    board_power_w: float
    pcie: Pcie
    nvlink_bandwidth: float | None
    launch_price_usd: float
    sources: Mapping[str, str] = field(compare=False)
    datacenter: bool = False
    notes: str = ""

    def source(self, figure: str) -> str:
        """Where `figure` ("flops", "memory", "bandwidth", "power", "price", "pcie", "nvlink") came from."""
        return self.sources.get(figure, self.sources["*"])

    @property
    def best_training_dtype(self) -> str:
        """The fastest dtype a model can train in (mixed precision: bf16/fp16 if faster than fp32)."""
        usable = [d for d in ("bf16", "fp16", "tf32", "fp32") if d in self.peak]
        return max(usable, key=lambda d: self.peak[d])


def _card(*, peak: dict[str, float], sources: dict[str, str], **kw: object) -> Card:
    return Card(peak=MappingProxyType(dict(peak)), sources=MappingProxyType(dict(sources)), **kw)  # type: ignore[arg-type]


_GEFORCE_NOTE = "fp16/bf16/fp8: tensor-core rate with FP32 accumulate (half the FP16-accumulate headline)."
_DC_PRICE = "estimate: no list price is published; figure as widely reported by the press at launch"

CARDS: tuple[Card, ...] = (
    _card(
        key="gtx1080", name="GeForce GTX 1080", aliases=("gtx 1080", "1080"), year=2016,
        peak={"fp64": 0.277 * T, "fp32": 8.873 * T, "fp16": 0.139 * T},
        memory_bytes=8 * GIB, memory_bandwidth=320 * GBPS, board_power_w=180,
        pcie=Pcie(3, 16), nvlink_bandwidth=None, launch_price_usd=599,
        sources={
            "*": "NVIDIA GeForce GTX 1080 Whitepaper (GP104), 2016: https://international.download.nvidia.com/"
                 "geforce-com/international/pdfs/GeForce_GTX_1080_Whitepaper_FINAL.pdf",
            "flops": "GTX 1080 whitepaper: 2560 CUDA cores x 2 x 1733 MHz boost = 8873 GFLOP/s FP32; "
                     "GP104 FP64 at 1/32 and FP16 at 1/64 of FP32 (no tensor cores)",
            "price": "NVIDIA launch announcement, May 2016: $599 (Founders Edition $699)",
        },
        notes="No tensor cores: mixed-precision training gains nothing, fp32 is its best dtype.",
    ),
    _card(
        key="rtx2080ti", name="GeForce RTX 2080 Ti", aliases=("rtx 2080 ti", "2080 ti"), year=2018,
        peak={"fp64": 0.420 * T, "fp32": 13.45 * T, "fp16": 53.8 * T},
        memory_bytes=11 * GIB, memory_bandwidth=616 * GBPS, board_power_w=250,
        pcie=Pcie(3, 16), nvlink_bandwidth=100 * GBPS, launch_price_usd=999,
        sources={
            "*": "NVIDIA Turing GPU Architecture whitepaper WP-09183-001, Appendix A (RTX 2080 Ti reference "
                 "board): https://images.nvidia.com/aem-dam/en-zz/Solutions/design-visualization/"
                 "technologies/turing-architecture/NVIDIA-Turing-Architecture-Whitepaper.pdf",
            "flops": "Turing whitepaper: 13.4 TFLOPS FP32 at 1545 MHz; 53.8 TFLOPS FP16 tensor with FP32 "
                     "accumulate (107.6 with FP16 accumulate); FP64 1/32 of FP32",
            "price": "NVIDIA launch announcement, Aug 2018: $999 reference ($1199 Founders Edition)",
        },
        notes=_GEFORCE_NOTE + " No bf16 (Turing).",
    ),
    _card(
        key="rtx3090", name="GeForce RTX 3090", aliases=("rtx 3090", "3090"), year=2020,
        peak={"fp64": 0.556 * T, "fp32": 35.6 * T, "tf32": 35.6 * T, "fp16": 71.0 * T, "bf16": 71.0 * T},
        memory_bytes=24 * GIB, memory_bandwidth=936 * GBPS, board_power_w=350,
        pcie=Pcie(4, 16), nvlink_bandwidth=112.5 * GBPS, launch_price_usd=1499,
        sources={
            "*": "NVIDIA Ampere GA102 GPU Architecture whitepaper v2, Appendix A (GeForce RTX 3090): "
                 "https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf",
            "flops": "GA102 whitepaper: 35.6 TFLOPS FP32; TF32 tensor 35.6 dense; FP16/BF16 tensor with FP32 "
                     "accumulate 71 dense (142 sparse); FP64 1/64 of FP32",
            "price": "NVIDIA launch announcement, Sep 2020: $1499",
        },
        notes=_GEFORCE_NOTE,
    ),
    _card(
        key="rtx4090", name="GeForce RTX 4090", aliases=("rtx 4090", "4090"), year=2022,
        peak={"fp64": 1.29 * T, "fp32": 82.6 * T, "tf32": 82.6 * T, "fp16": 165.2 * T, "bf16": 165.2 * T,
              "fp8": 330.3 * T},
        memory_bytes=24 * GIB, memory_bandwidth=1008 * GBPS, board_power_w=450,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=1599,
        sources={
            "*": "NVIDIA Ada GPU Architecture whitepaper v2.1, Appendix A (RTX 4090): "
                 "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf",
            "flops": "Ada whitepaper: 82.6 TFLOPS FP32; TF32 tensor 82.6 dense; FP16/BF16 tensor with FP32 "
                     "accumulate 165.2 dense; FP8 with FP32 accumulate 330.3 dense; FP64 1/64 of FP32",
            "price": "NVIDIA launch announcement, Sep 2022: $1599",
        },
        notes=_GEFORCE_NOTE + " No NVLink.",
    ),
    _card(
        key="rtx5090", name="GeForce RTX 5090", aliases=("rtx 5090", "5090"), year=2025,
        peak={"fp64": 1.64 * T, "fp32": 104.8 * T, "tf32": 104.8 * T, "fp16": 209.5 * T, "bf16": 209.5 * T,
              "fp8": 419.0 * T},
        memory_bytes=32 * GIB, memory_bandwidth=1792 * GBPS, board_power_w=575,
        pcie=Pcie(5, 16), nvlink_bandwidth=None, launch_price_usd=1999,
        sources={
            "*": "NVIDIA RTX Blackwell GPU Architecture whitepaper, Appendix A (RTX 5090): "
                 "https://images.nvidia.com/aem-dam/Solutions/geforce/blackwell/"
                 "nvidia-rtx-blackwell-gpu-architecture.pdf",
            "flops": "RTX Blackwell whitepaper: 104.8 TFLOPS FP32 (21760 cores x 2 x 2407 MHz); FP16/BF16 "
                     "tensor with FP32 accumulate 209.5 dense (838 sparse with FP16 accumulate is the "
                     "headline); FP8 with FP32 accumulate 419 dense; FP64 1/64 of FP32",
            "price": "NVIDIA CES 2025 announcement: $1999",
        },
        notes=_GEFORCE_NOTE + " No NVLink.",
    ),
    _card(
        key="a100", name="A100 SXM 80GB", aliases=("a100 sxm4 80gb", "a100 sxm 80gb", "a100 80gb sxm",
                                                   "a100 sxm4", "a100"),
        year=2020,
        peak={"fp64": 19.5 * T, "fp32": 19.5 * T, "tf32": 156 * T, "fp16": 312 * T, "bf16": 312 * T},
        memory_bytes=80 * GIB, memory_bandwidth=2039 * GBPS, board_power_w=400,
        pcie=Pcie(4, 16), nvlink_bandwidth=600 * GBPS, launch_price_usd=15000, datacenter=True,
        sources={
            "*": "NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM column): https://www.nvidia.com/"
                 "content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
            "price": _DC_PRICE + " (A100 80GB about $15k; DGX A100 with 8 GPUs listed at $199k in 2020)",
        },
    ),
    _card(
        key="h100", name="H100 SXM", aliases=("h100 80gb hbm3", "h100 sxm5 80gb", "h100 sxm5", "h100 sxm",
                                              "h100"),
        year=2022,
        peak={"fp64": 67 * T, "fp32": 67 * T, "tf32": 494.7 * T, "fp16": 989.4 * T, "bf16": 989.4 * T,
              "fp8": 1978.9 * T},
        memory_bytes=80 * GIB, memory_bandwidth=3350 * GBPS, board_power_w=700,
        pcie=Pcie(5, 16), nvlink_bandwidth=900 * GBPS, launch_price_usd=30000, datacenter=True,
        sources={
            "*": "NVIDIA H100 Tensor Core GPU datasheet (H100 SXM column; tensor figures halved from the "
                 "sparse ones it quotes): https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
            "price": _DC_PRICE + " (H100 SXM $25k-$40k)",
        },
    ),
    _card(
        key="h100-pcie", name="H100 PCIe", aliases=("h100 pcie", "h100 80gb pcie", "h100 pcie 80gb"), year=2022,
        peak={"fp64": 51 * T, "fp32": 51 * T, "tf32": 378 * T, "fp16": 756 * T, "bf16": 756 * T, "fp8": 1513 * T},
        memory_bytes=80 * GIB, memory_bandwidth=2000 * GBPS, board_power_w=350,
        pcie=Pcie(5, 16), nvlink_bandwidth=600 * GBPS, launch_price_usd=25000, datacenter=True,
        sources={
            "*": "NVIDIA H100 Tensor Core GPU datasheet (H100 PCIe column; tensor figures halved from the "
                 "sparse ones it quotes): https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
            "nvlink": "H100 datasheet: NVLink bridge 600 GB/s between pairs of PCIe cards",
            "price": _DC_PRICE + " (H100 PCIe about $25k)",
        },
    ),
    _card(
        key="h200", name="H200 SXM", aliases=("h200 141gb hbm3e", "h200 sxm", "h200"), year=2024,
        peak={"fp64": 67 * T, "fp32": 67 * T, "tf32": 494.7 * T, "fp16": 989.4 * T, "bf16": 989.4 * T,
              "fp8": 1978.9 * T},
        memory_bytes=141 * GIB, memory_bandwidth=4800 * GBPS, board_power_w=700,
        pcie=Pcie(5, 16), nvlink_bandwidth=900 * GBPS, launch_price_usd=32000, datacenter=True,
        sources={
            "*": "NVIDIA H200 Tensor Core GPU product page and datasheet (H200 SXM column; tensor figures "
                 "halved from the sparse ones it quotes): https://www.nvidia.com/en-us/data-center/h200/",
            "price": _DC_PRICE + " (H200 about $30k-$35k)",
        },
        notes="Same GH100 compute as H100 SXM; more and faster memory (HBM3e).",
    ),
    _card(
        key="b200", name="B200", aliases=("b200 sxm 180gb", "b200 180gb", "b200"), year=2024,
        peak={"fp64": 37 * T, "fp32": 75 * T, "tf32": 1125 * T, "fp16": 2250 * T, "bf16": 2250 * T,
              "fp8": 4500 * T},
        memory_bytes=180 * GIB, memory_bandwidth=8000 * GBPS, board_power_w=1000,
        pcie=Pcie(5, 16), nvlink_bandwidth=1800 * GBPS, launch_price_usd=35000, datacenter=True,
        sources={
            "*": "NVIDIA HGX B200 datasheet (8-GPU totals divided by 8; tensor figures halved from the sparse "
                 "ones it quotes): https://www.nvidia.com/en-us/data-center/hgx/",
            "bandwidth": "HGX B200 datasheet: 64 TB/s for 8 GPUs = 8 TB/s each (the driver reports a "
                         "7680-bit bus at 3996 MHz, i.e. 7.67 TB/s: pytorch/ao PR #4002)",
            "pcie": "MLCommons inference v6.0 system description NVIDIA B200-SXM-180GB: PCIe Gen5 x16",
            "price": _DC_PRICE + " (NVIDIA's CEO quoted $30k-$40k, March 2024)",
        },
    ),
)


def _tokens(name: str) -> tuple[str, ...]:
    words = re.split(r"[^0-9a-z]+", name.lower())
    return tuple(w for w in words if w and w not in _NOISE)


def _contains(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def find_card(name: str) -> Card | None:
    """The card a device name or user spelling refers to, or None.

    Matches torch/NVML names ("NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3") and short keys
    ("4090", "h100-pcie"). The longest alias found in the name wins; a name with a variant marker
    (Ti, Laptop, NVL, PCIe, 40GB...) that the alias lacks is a different card and matches nothing.
    """
    wanted = name.strip().lower()
    for card in CARDS:
        if wanted in (card.key, card.name.lower()):
            return card
    tokens = _tokens(name)
    variants = {t for t in tokens if t in _VARIANT or _SIZE.match(t)}
    best: tuple[int, Card] | None = None
    for card in CARDS:
        for alias in card.aliases:
            alias_tokens = _tokens(alias)
            if not _contains(tokens, alias_tokens) or not variants <= set(alias_tokens):
                continue
            if best is None or len(alias_tokens) > best[0]:
                best = (len(alias_tokens), card)
    return best[1] if best else None


def get_card(name: str) -> Card:
    """Like find_card, but an unknown name is the user's error, listing what is known."""
    card = find_card(name)
    if card is None:
        known = ", ".join(c.key for c in CARDS)
        raise FlopwattError(f"unknown card {name!r}; known cards: {known}")
    return card


def normalize_dtype(dtype: str) -> str:
    """"bfloat16", "torch.bfloat16", "BF16" -> "bf16"."""
    d = dtype.strip().lower().removeprefix("torch.")
    return _DTYPE_ALIASES.get(d, d)


def peak_flops(card: Card, dtype: str) -> float | None:
    """Dense peak FLOP/s of `card` in `dtype`, or None where the card has no such rate."""
    return card.peak.get(normalize_dtype(dtype))
