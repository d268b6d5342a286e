"""Reference cards: what a GPU can do on paper, what it was measured to reach, and where each figure came from.

The projection compares measured machines against these rows, `compare RUN --card` sets a run
beside them, and the probes use them as the "peak" a measurement is a fraction of. Every figure
is in SI units: FLOP/s, bytes, B/s, W, USD.

The API, for `project`, `compare` and the probes:

- `find_card(name)` / `get_card(name)`: a device name as torch or NVML reports it ("NVIDIA GeForce
  RTX 4090") or a user's spelling ("4090", "h100-pcie") to its `Card`; get_card raises a one-line
  FlopwattError naming the closest known cards.
- `card.peak[dtype]` (or `peak_flops(card, dtype)`): the dense datasheet peak FLOP/s;
  `card.source("flops")` says where it is from.
- `card.achievable(dtype) -> Achieved | None`: matmul FLOP/s someone measured on this card and
  published (mamf-finder's table, chiefly), with `.value`, `.source` and `.date`; None where nobody
  published one. `card.achievable_bandwidth("copy" | "triad")` is the same for memory bandwidth
  (BabelStream and similar STREAM kernels, bytes read plus written, as the memory probe counts).
- `datasheet_limit(card, metric, dtype)` and `achieved_limit(card, metric, dtype)`: the same two,
  looked up by a run's metric name (matmul_flops, mem_copy_bandwidth, h2d_bandwidth...).

Conventions (so rows compare like with like):

- FLOP/s are dense (no 2:4 sparsity); one fused multiply-add counts as two FLOPs.
- "fp16"/"bf16"/"fp8"/"tf32" are tensor-core (or matrix-core) figures. GeForce cards run FP16/BF16
  tensor math at full rate only with FP16 accumulate; training accumulates in FP32, so their rows
  give the *FP32-accumulate* figure, which is half the headline number. Professional and
  datacenter cards have no such cut.
- "fp32" is the non-tensor (CUDA core) rate; "fp64" is the FP64 tensor-core rate where the card has
  one (DGEMM runs on it), else the CUDA-core rate. A rate the vendor does not publish is absent.
- GeForce cards that NVIDIA's architecture whitepapers leave out are computed the way those
  whitepapers compute the ones they tabulate (`_geforce`: CUDA cores x 2 x boost clock, and the
  architecture's tensor ratios); the tests check the formula against the tabulated cards.
- GTX 1080 (Pascal GP104) has no tensor cores and runs FP16 at 1/64 of FP32: its fp16 row is real
  and tiny, which is the point.
- memory_bytes: the vendors' "GB" for these memories is GiB (an A100 80GB reports 81920 MiB), so
  sizes are datasheet GB x 2**30. Bandwidths are decimal (GB/s x 1e9), as quoted.
- nvlink_bandwidth is the total of both directions, as NVIDIA quotes it; per direction is half.
- Datacenter and professional GPUs without a public list price carry a widely reported estimate,
  and the price source says so.
- Achieved figures are real published measurements, each with who measured it, with what, and the
  date it was published; they are never derived from a datasheet. Where none is published the
  card has none.
- Apple M-series GPUs (`APPLE_GPUS`): one row per chip and GPU core count, since MPS names the
  device by chip alone and a 24-core M1 Max is not a 32-core one; the inventory adds the count
  from system_profiler ("Apple M1 Max GPU (32-core)"), and a name without it matches no row.
  Only Apple's own figures: FP32 where Apple stated it (the top configurations of M1, M1 Pro,
  M1 Max, M1 Ultra) and unified memory bandwidth per chip. Not covered, because Apple publishes
  none: M2/M3/M4 FLOP/s, fp16/bf16 rates, M1's bandwidth, a per-core rate to scale a smaller
  configuration by, and the GPU's memory size, power, host link and price (those fields are None).
  M3 chips and the 32-core M4 Max have no row: no figure of theirs was found in Apple's words.
"""

from __future__ import annotations

import difflib
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
_NOISE = frozenset({"nvidia", "geforce", "gpu", "graphics", "tesla", "card", "amd", "radeon", "generation"})
#: Name tokens that mark a different card of the same number (RTX 4090 D, 4090 Laptop, H100 NVL,
#: A100 40GB...). A name carrying one only matches an alias that carries it too.
_VARIANT = frozenset({"ti", "super", "d", "laptop", "mobile", "max", "q", "nvl", "pcie", "sxm", "sxm4",
                      "sxm5", "hbm2", "hbm2e", "hbm3", "hbm3e"})
_SIZE = re.compile(r"^\d+gb$")

@dataclass(frozen=True)
class Pcie:
    """The card's link to the host. `c2c_bandwidth`: GH200's GPU reaches its CPU over NVLink-C2C
    instead; its bytes per second per direction, which `bandwidth` then returns."""

    generation: int
    lanes: int
    c2c_bandwidth: float | None = None

    @property
    def bandwidth(self) -> float:
        """Usable bytes per second per direction (after 8b/10b or 128b/130b line coding)."""
        if self.c2c_bandwidth is not None:
            return self.c2c_bandwidth
        gt_per_lane = {1: 2.5e9, 2: 5e9, 3: 8e9, 4: 16e9, 5: 32e9, 6: 64e9}[self.generation]
        efficiency = 0.8 if self.generation <= 2 else 128 / 130
        return gt_per_lane * efficiency * self.lanes / 8


@dataclass(frozen=True)
class Achieved:
    """A figure someone measured on this card and published: what it reaches, not what it promises."""

    #: FLOP/s or B/s.
    value: float
    #: Who measured it, with what, and where it is published.
    source: str
    #: When it was published (ISO date of the post, or of the commit that added it).
    date: str


@dataclass(frozen=True)
class Card:
    """One reference GPU. `sources["*"]` covers every figure without a source of its own."""

    key: str
    name: str
    aliases: tuple[str, ...]
    year: int
    peak: Mapping[str, float] = field(compare=False)
    #: None where the vendor publishes no figure (an Apple GPU shares the Mac's memory, has no board
    #: power, host link or price of its own); consumers skip what is None.
    memory_bytes: int | None
    memory_bandwidth: float | None
    board_power_w: float | None
    pcie: Pcie | None
    nvlink_bandwidth: float | None
    launch_price_usd: float | None
    sources: Mapping[str, str] = field(compare=False)
    datacenter: bool = False
    notes: str = ""
    #: Published measurements: matmul FLOP/s by dtype, and memory bandwidth by STREAM kernel.
    achieved_flops: Mapping[str, Achieved] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    achieved_bandwidth: Mapping[str, Achieved] = field(default_factory=lambda: MappingProxyType({}), compare=False)

    def source(self, figure: str) -> str:
        """Where `figure` ("flops", "memory", "bandwidth", "power", "price", "pcie", "nvlink") came from."""
        return self.sources.get(figure, self.sources["*"])

    def achievable(self, dtype: str) -> Achieved | None:
        """Matmul FLOP/s measured on this card in `dtype` and published, or None where nobody did."""
        return self.achieved_flops.get(normalize_dtype(dtype))

    def achievable_bandwidth(self, kernel: str) -> Achieved | None:
        """Memory bandwidth of a STREAM kernel ("copy" or "triad") measured on this card, or None."""
        return self.achieved_bandwidth.get(kernel)

    def missing_datasheet(self) -> list[str]:
        """The figures a projection of this card needs that its vendor does not publish (Apple GPUs)."""
        figures = (("FLOP/s", self.peak), ("memory size", self.memory_bytes), ("board power", self.board_power_w),
                   ("host link", self.pcie), ("price", self.launch_price_usd))
        return [what for what, figure in figures if not figure]

    @property
    def best_training_dtype(self) -> str:
        """The fastest dtype a model can train in (mixed precision: bf16/fp16 if faster than fp32)."""
        usable = [d for d in ("bf16", "fp16", "tf32", "fp32") if d in self.peak]
        return max(usable, key=lambda d: self.peak[d])


def _card(
    *,
    peak: dict[str, float],
    sources: dict[str, str],
    achieved_flops: dict[str, Achieved] | None = None,
    achieved_bandwidth: dict[str, Achieved] | None = None,
    **kw: object,
) -> Card:
    return Card(  # type: ignore[arg-type]
        peak=MappingProxyType(dict(peak)),
        sources=MappingProxyType(dict(sources)),
        achieved_flops=MappingProxyType(dict(achieved_flops or {})),
        achieved_bandwidth=MappingProxyType(dict(achieved_bandwidth or {})),
        **kw,
    )


def _geforce(cores: int, boost_mhz: float, *, fp8: bool) -> dict[str, float]:
    """Dense peaks of an Ampere, Ada or Blackwell GeForce card, as NVIDIA's whitepapers compute them:
    FP32 = CUDA cores x 2 FLOP x boost clock; TF32 tensor = FP32; FP16/BF16 tensor with FP32
    accumulate = 2 x FP32; FP8 tensor with FP32 accumulate (Ada, Blackwell) = 4 x FP32; FP64 = FP32 / 64.
    (GA102 whitepaper appendix A, RTX 3090; Ada whitepaper appendix A, RTX 4090 and 4080; RTX
    Blackwell whitepaper appendix A, RTX 5090.)"""
    fp32 = cores * 2 * boost_mhz * 1e6
    peak = {"fp64": fp32 / 64, "fp32": fp32, "tf32": fp32, "fp16": 2 * fp32, "bf16": 2 * fp32}
    if fp8:
        peak["fp8"] = 4 * fp32
    return peak


_GEFORCE_NOTE = "fp16/bf16/fp8: tensor-core rate with FP32 accumulate (half the FP16-accumulate headline)."
_DC_PRICE = "estimate: no list price is published; figure as widely reported by the press at launch"

_GA10X = ("NVIDIA Ampere GA102 GPU Architecture whitepaper v2: "
          "https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf")
_ADA = ("NVIDIA Ada GPU Architecture whitepaper v2.1: "
        "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf")
_RTX_BLACKWELL = ("NVIDIA RTX Blackwell GPU Architecture whitepaper: https://images.nvidia.com/aem-dam/Solutions/"
                  "geforce/blackwell/nvidia-rtx-blackwell-gpu-architecture.pdf")
_A100_DATASHEET = ("NVIDIA A100 Tensor Core GPU datasheet: https://www.nvidia.com/content/dam/en-zz/Solutions/"
                   "Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf")
_H100_DATASHEET = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
_GH200 = ("NVIDIA GH200 Grace Hopper Superchip datasheet (GPU figures; tensor figures halved from the sparse "
          "ones it quotes): https://www.nvidia.com/en-us/data-center/grace-hopper-superchip/")

_APPLE_NONE = ("Apple publishes no board power, host link, memory size or price for the GPU of an M-series chip: "
               "it shares the Mac's power, unified memory and price; none is given")


def _apple(chip: str, gpu_cores: int, year: int, *, bandwidth_gbps: float | None, bandwidth_source: str,
           fp32_tflops: float | None = None, flops_source: str | None = None) -> Card:
    """An Apple M-series GPU: one row per chip and GPU core count, which the inventory puts in the
    device name ("Apple M1 Max GPU (32-core)"); a name without the count matches no row.

    Only Apple's own figures: FP32 where Apple stated it (for the top configuration of some chips),
    memory bandwidth per chip. Apple states no FP16/BF16 rate, so there is none."""
    alias = f"{chip.lower()} {gpu_cores} core"
    no_flops = (f"Apple states no FLOP/s for the {gpu_cores}-core GPU of {chip}, nor a per-core figure to "
                "scale from; none is given")
    no_bandwidth = f"Apple states no memory bandwidth for {chip}; none is given"
    return _card(
        key=f"{chip.lower().replace(' ', '-')}-{gpu_cores}c", name=f"Apple {chip} {gpu_cores}-core GPU",
        aliases=(alias,), year=year,
        peak={"fp32": fp32_tflops * T} if fp32_tflops is not None else {},
        memory_bytes=None, memory_bandwidth=bandwidth_gbps * GBPS if bandwidth_gbps is not None else None,
        board_power_w=None, pcie=None, nvlink_bandwidth=None, launch_price_usd=None,
        sources={"*": _APPLE_NONE, "flops": flops_source or no_flops,
                 "bandwidth": bandwidth_source if bandwidth_gbps is not None else no_bandwidth},
        notes="Unified memory: the GPU uses the Mac's RAM. FP16/BF16 rates are not published.",
    )


_M1 = ("Apple, M1 announcement, 10 Nov 2020 ('One More Thing' event and press release 'Apple unleashes M1'): "
       "8-core GPU, 2.6 teraflops of throughput; as reported by MacRumors: "
       "https://www.macrumors.com/2020/11/10/apple-announces-m1-chip-for-the-mac/")
_M1_PRO_MAX = ("Apple press release 'Introducing M1 Pro and M1 Max', 18 Oct 2021 (M1 Pro 200GB/s, M1 Max 400GB/s "
               "of memory bandwidth, one figure per chip); Business Wire text: https://semiwiki.com/forum/index.php"
               "?threads/introducing-m1-pro-and-m1-max-the-most-powerful-chips-apple-has-ever-built.14790/")
_M1_PRO_FLOPS = ("Apple 'Unleashed' event, 18 Oct 2021, M1 Pro GPU: 16 cores, 2,048 execution units, 5.2 teraflops; "
                 "as reported by Stuff (https://stuff.co.za/?p=135995); the press release states no TFLOPS")
_M1_MAX_FLOPS = ("Apple 'Unleashed' event, 18 Oct 2021, M1 Max GPU: 32 cores, 4,096 execution units, 10.4 teraflops; "
                 "as reported by https://www.italy24news.com/News/228490.html; the press release states no TFLOPS")
_M1_ULTRA = ("Apple press release 'Apple unveils M1 Ultra', 8 Mar 2022: 800GB/s memory bandwidth; as reported by "
             "Notebookcheck: https://www.notebookcheck.net/Apple-M1-Ultra-revealed-with-UltraFusion-architecture-"
             "a-20-core-CPU-and-up-to-a-64-core-GPU.607117.0.html")
_M1_ULTRA_FLOPS = ("Apple 'Peek Performance' event, 8 Mar 2022: M1 Ultra 64-core GPU, 21 teraflops; as reported by "
                   "https://techidence.com/apple-m1-ultra-the-most-powerful-apple-chip-stands-out-with-20-cpu-cores"
                   "-and-64-gpu-cores/; the press release states no TFLOPS")
_M2 = ("Apple M2 announcement (WWDC, 6 Jun 2022): 100GB/s of unified memory bandwidth; as reported by MacRumors: "
       "https://www.macrumors.com/2022/06/06/apple-announces-m2-chip-with-support-for-up-to-24gb-memory/")
_M2_PRO_MAX = ("Apple newsroom, 'Apple unveils M2 Pro and M2 Max', 17 Jan 2023 (M2 Pro 200GB/s, M2 Max 400GB/s of "
               "unified memory bandwidth): https://www.apple.com/hk/en/newsroom/2023/01/"
               "apple-unveils-m2-pro-and-m2-max-next-generation-chips-for-next-level-workflows")
_M2_ULTRA = ("Apple newsroom, 'Apple introduces M2 Ultra', 5 Jun 2023: 800GB/s of memory bandwidth: "
             "https://www.apple.com/pt/newsroom/2023/06/apple-introduces-m2-ultra")
_M4_PRO_MAX = ("Apple M4 Pro and M4 Max announcements, 29-30 Oct 2024: M4 Pro 273GB/s, M4 Max (16-core CPU, 40-core "
               "GPU) 546GB/s of unified memory bandwidth; as reported by TechCrunch ('Apple announces M4 Max chip, "
               "debuting on the MacBook Pro', 30 Oct 2024) and Notebookcheck: https://www.notebookcheck.net/"
               "Apple-M4-Max-official-with-incremental-upgrades-over-the-M3-Max.911098.0.html")

#: Apple M-series GPUs with at least one figure Apple published. Left out: M1's 7-core GPU (no figure),
#: every M3 and the M4 base chip (no GPU FLOP/s, and no bandwidth per GPU configuration found), M4 Max's
#: 32-core GPU (its 410GB/s not found in Apple's words).
APPLE_GPUS: tuple[Card, ...] = (
    _apple("M1", 8, 2020, bandwidth_gbps=None, bandwidth_source="", fp32_tflops=2.6, flops_source=_M1),
    _apple("M1 Pro", 14, 2021, bandwidth_gbps=200, bandwidth_source=_M1_PRO_MAX),
    _apple("M1 Pro", 16, 2021, bandwidth_gbps=200, bandwidth_source=_M1_PRO_MAX, fp32_tflops=5.2,
           flops_source=_M1_PRO_FLOPS),
    _apple("M1 Max", 24, 2021, bandwidth_gbps=400, bandwidth_source=_M1_PRO_MAX),
    _apple("M1 Max", 32, 2021, bandwidth_gbps=400, bandwidth_source=_M1_PRO_MAX, fp32_tflops=10.4,
           flops_source=_M1_MAX_FLOPS),
    _apple("M1 Ultra", 48, 2022, bandwidth_gbps=800, bandwidth_source=_M1_ULTRA),
    _apple("M1 Ultra", 64, 2022, bandwidth_gbps=800, bandwidth_source=_M1_ULTRA, fp32_tflops=21,
           flops_source=_M1_ULTRA_FLOPS),
    _apple("M2", 8, 2022, bandwidth_gbps=100, bandwidth_source=_M2),
    _apple("M2", 10, 2022, bandwidth_gbps=100, bandwidth_source=_M2),
    _apple("M2 Pro", 16, 2023, bandwidth_gbps=200, bandwidth_source=_M2_PRO_MAX),
    _apple("M2 Pro", 19, 2023, bandwidth_gbps=200, bandwidth_source=_M2_PRO_MAX),
    _apple("M2 Max", 30, 2023, bandwidth_gbps=400, bandwidth_source=_M2_PRO_MAX),
    _apple("M2 Max", 38, 2023, bandwidth_gbps=400, bandwidth_source=_M2_PRO_MAX),
    _apple("M2 Ultra", 60, 2023, bandwidth_gbps=800, bandwidth_source=_M2_ULTRA),
    _apple("M2 Ultra", 76, 2023, bandwidth_gbps=800, bandwidth_source=_M2_ULTRA),
    _apple("M4 Pro", 16, 2024, bandwidth_gbps=273, bandwidth_source=_M4_PRO_MAX),
    _apple("M4 Pro", 20, 2024, bandwidth_gbps=273, bandwidth_source=_M4_PRO_MAX),
    _apple("M4 Max", 40, 2024, bandwidth_gbps=546, bandwidth_source=_M4_PRO_MAX),
)

# -- published measurements --------------------------------------------------------------------

_MAMF = ("stas00/ml-engineering, compute/accelerator/README.md, 'Maximum Achievable Matmul FLOPS comparison "
         "table' (mamf-finder: best shape of a sweep, mean of 100 matmuls after 50 warm-ups; table as of commit "
         "744d01e): https://github.com/stas00/ml-engineering/tree/master/compute/accelerator"
         "#maximum-achievable-matmul-flops-comparison-table")


def _mamf(tflops: float, detail: str, date: str) -> Achieved:
    return Achieved(tflops * T, f"{_MAMF}; {detail}", date)


_AZURE = ("Azure/AI-benchmarking-guide, {file}, 'HBM Bandwidth' table (BabelStream CUDA kernels, bytes read "
          "plus written; mean over runs): https://github.com/Azure/AI-benchmarking-guide/blob/main/{file}")


def _azure(tbps: float, file: str, detail: str, date: str) -> Achieved:
    return Achieved(tbps * T, f"{_AZURE.format(file=file)}; {detail}", date)


_IREE_BABELSTREAM = ("iree-org/iree-experimental, transform_dialect/README.md: BabelStream 4.0, CUDA, double, "
                     "268.4 MB arrays, on an RTX 2080 Ti (driver 11060): "
                     "https://github.com/iree-org/iree-experimental/blob/main/transform_dialect/README.md")

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
        achieved_bandwidth={
            "copy": Achieved(547.8 * GBPS, _IREE_BABELSTREAM + " (Copy 547796.718 MB/s)", "2023-01-11"),
            "triad": Achieved(556.8 * GBPS, _IREE_BABELSTREAM + " (Triad 556770.252 MB/s)", "2023-01-11"),
        },
    ),
    # -- GeForce RTX 30 (Ampere): GA102 whitepaper ratios; NVIDIA product pages for cores, clocks, memory, power
    _card(
        key="rtx3060", name="GeForce RTX 3060", aliases=("rtx 3060", "3060"), year=2021,
        peak=_geforce(3584, 1777, fp8=False),
        memory_bytes=12 * GIB, memory_bandwidth=360 * GBPS, board_power_w=170,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=329,
        sources={
            "*": "NVIDIA GeForce RTX 3060 Family specifications (RTX 3060 column: 3584 CUDA cores, 1.78 GHz "
                 "boost, 12 GB GDDR6 on 192 bits at 15 Gbps = 360 GB/s, 170 W graphics card power): "
                 "https://www.nvidia.com/en-us/geforce/graphics-cards/30-series/rtx-3060-3060ti/",
            "flops": "computed as " + _GA10X + " does for the RTX 3090: 3584 cores x 2 x 1777 MHz = 12.7 TFLOPS FP32",
            "price": "NVIDIA CES 2021 announcement: $329",
        },
        notes=_GEFORCE_NOTE + " An 8 GB RTX 3060 reports the same name.",
    ),
    _card(
        key="rtx3060ti", name="GeForce RTX 3060 Ti", aliases=("rtx 3060 ti", "3060 ti"), year=2020,
        peak=_geforce(4864, 1665, fp8=False),
        memory_bytes=8 * GIB, memory_bandwidth=448 * GBPS, board_power_w=200,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=399,
        sources={
            "*": "NVIDIA GeForce RTX 3060 Family specifications (RTX 3060 Ti column: 4864 CUDA cores, 1.67 GHz "
                 "boost, 8 GB GDDR6 on 256 bits at 14 Gbps = 448 GB/s, 200 W graphics card power): "
                 "https://www.nvidia.com/en-us/geforce/graphics-cards/30-series/rtx-3060-3060ti/",
            "flops": "computed as " + _GA10X + " does for the RTX 3090: 4864 cores x 2 x 1665 MHz = 16.2 TFLOPS FP32",
            "price": "NVIDIA launch announcement, Dec 2020: $399",
        },
        notes=_GEFORCE_NOTE,
    ),
    _card(
        key="rtx3070", name="GeForce RTX 3070", aliases=("rtx 3070", "3070"), year=2020,
        peak=_geforce(5888, 1725, fp8=False),
        memory_bytes=8 * GIB, memory_bandwidth=448 * GBPS, board_power_w=220,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=499,
        sources={
            "*": _GA10X + ", appendix A (GeForce RTX 3070: 5888 CUDA cores, 1725 MHz boost, 20.3 TFLOPS FP32, "
                 "40.6 TFLOPS FP16 tensor with FP32 accumulate; 8 GB GDDR6, 448 GB/s; 220 W)",
            "price": "NVIDIA launch announcement, Sep 2020: $499",
        },
        notes=_GEFORCE_NOTE,
    ),
    _card(
        key="rtx3080", name="GeForce RTX 3080", aliases=("rtx 3080", "3080"), year=2020,
        peak=_geforce(8704, 1710, fp8=False),
        memory_bytes=10 * GIB, memory_bandwidth=760 * GBPS, board_power_w=320,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=699,
        sources={
            "*": _GA10X + " (GeForce RTX 3080: 8704 CUDA cores, 1710 MHz boost, 29.8 TFLOPS FP32, 59.5 TFLOPS "
                 "FP16 tensor with FP32 accumulate; 10 GB GDDR6X at 19 Gbps, 760 GB/s; 320 W)",
            "price": "NVIDIA launch announcement, Sep 2020: $699",
        },
        notes=_GEFORCE_NOTE + " The later 12 GB RTX 3080 (912 GB/s) reports the same name.",
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
    # -- GeForce RTX 40 (Ada)
    _card(
        key="rtx4060", name="GeForce RTX 4060", aliases=("rtx 4060", "4060"), year=2023,
        peak=_geforce(3072, 2460, fp8=True),
        memory_bytes=8 * GIB, memory_bandwidth=272 * GBPS, board_power_w=115,
        pcie=Pcie(4, 8), nvlink_bandwidth=None, launch_price_usd=299,
        sources={
            "*": "NVIDIA GeForce RTX 4060 Family specifications (RTX 4060 column: 3072 CUDA cores, 2.46 GHz boost, "
                 "8 GB GDDR6 on 128 bits at 17 Gbps = 272 GB/s, 115 W graphics card power, PCIe 4.0 x8): "
                 "https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4060-4060ti/",
            "flops": "computed as " + _ADA + " does for the RTX 4090: 3072 cores x 2 x 2460 MHz = 15.1 TFLOPS FP32",
            "price": "NVIDIA announcement, May 2023: $299",
        },
        notes=_GEFORCE_NOTE,
    ),
    _card(
        key="rtx4060ti", name="GeForce RTX 4060 Ti", aliases=("rtx 4060 ti", "4060 ti"), year=2023,
        peak=_geforce(4352, 2535, fp8=True),
        memory_bytes=8 * GIB, memory_bandwidth=288 * GBPS, board_power_w=160,
        pcie=Pcie(4, 8), nvlink_bandwidth=None, launch_price_usd=399,
        sources={
            "*": "NVIDIA GeForce RTX 4060 Family specifications (RTX 4060 Ti 8 GB column: 4352 CUDA cores, "
                 "2.54 GHz boost, 8 GB GDDR6 on 128 bits at 18 Gbps = 288 GB/s, 160 W, PCIe 4.0 x8): "
                 "https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4060-4060ti/",
            "flops": "computed as " + _ADA + " does for the RTX 4090: 4352 cores x 2 x 2535 MHz = 22.1 TFLOPS FP32",
            "price": "NVIDIA announcement, May 2023: $399 (16 GB: $499)",
        },
        notes=_GEFORCE_NOTE + " The 16 GB RTX 4060 Ti (165 W) reports the same name; this row is the 8 GB card.",
    ),
    _card(
        key="rtx4070", name="GeForce RTX 4070", aliases=("rtx 4070", "4070"), year=2023,
        peak=_geforce(5888, 2475, fp8=True),
        memory_bytes=12 * GIB, memory_bandwidth=504 * GBPS, board_power_w=200,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=599,
        sources={
            "*": "NVIDIA GeForce RTX 4070 Family specifications (RTX 4070 column: 5888 CUDA cores, 2.48 GHz "
                 "boost, 12 GB GDDR6X on 192 bits at 21 Gbps = 504 GB/s, 200 W graphics card power): "
                 "https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4070-family/",
            "flops": "computed as " + _ADA + " does for the RTX 4090: 5888 cores x 2 x 2475 MHz = 29.1 TFLOPS FP32",
            "price": "NVIDIA announcement, Apr 2023: $599",
        },
        notes=_GEFORCE_NOTE,
    ),
    _card(
        key="rtx4070ti", name="GeForce RTX 4070 Ti", aliases=("rtx 4070 ti", "4070 ti"), year=2023,
        peak=_geforce(7680, 2610, fp8=True),
        memory_bytes=12 * GIB, memory_bandwidth=504 * GBPS, board_power_w=285,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=799,
        sources={
            "*": "NVIDIA GeForce RTX 4070 Family specifications (RTX 4070 Ti column: 7680 CUDA cores, 2.61 GHz "
                 "boost, 12 GB GDDR6X on 192 bits at 21 Gbps = 504 GB/s, 285 W graphics card power): "
                 "https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4070-family/",
            "flops": "computed as " + _ADA + " does for the RTX 4090: 7680 cores x 2 x 2610 MHz = 40.1 TFLOPS FP32 "
                     "(the configuration the whitepaper's first edition tabulated as 'RTX 4080 12GB')",
            "price": "NVIDIA CES 2023 announcement: $799",
        },
        notes=_GEFORCE_NOTE,
    ),
    _card(
        key="rtx4080", name="GeForce RTX 4080", aliases=("rtx 4080", "4080"), year=2022,
        peak=_geforce(9728, 2505, fp8=True),
        memory_bytes=16 * GIB, memory_bandwidth=716.8 * GBPS, board_power_w=320,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=1199,
        sources={
            "*": _ADA + ", appendix A (GeForce RTX 4080: 9728 CUDA cores, 2505 MHz boost, 48.7 TFLOPS FP32, "
                 "97.5 TFLOPS FP16/BF16 tensor and 194.9 FP8 with FP32 accumulate; 16 GB GDDR6X at 22.4 Gbps, "
                 "716.8 GB/s; 320 W)",
            "price": "NVIDIA announcement, Sep 2022: $1199",
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
    # -- GeForce RTX 50 (Blackwell)
    _card(
        key="rtx5070", name="GeForce RTX 5070", aliases=("rtx 5070", "5070"), year=2025,
        peak=_geforce(6144, 2512, fp8=True),
        memory_bytes=12 * GIB, memory_bandwidth=672 * GBPS, board_power_w=250,
        pcie=Pcie(5, 16), nvlink_bandwidth=None, launch_price_usd=549,
        sources={
            "*": "NVIDIA GeForce RTX 5070 Family specifications (RTX 5070 column: 6144 CUDA cores, 2.51 GHz "
                 "boost, 12 GB GDDR7 on 192 bits at 28 Gbps = 672 GB/s, 250 W total graphics power): "
                 "https://www.nvidia.com/en-us/geforce/graphics-cards/50-series/rtx-5070-family/",
            "flops": "computed as " + _RTX_BLACKWELL + " does for the RTX 5090: 6144 cores x 2 x 2512 MHz = "
                     "30.9 TFLOPS FP32",
            "price": "NVIDIA CES 2025 announcement: $549",
        },
        notes=_GEFORCE_NOTE + " No NVLink.",
    ),
    _card(
        key="rtx5070ti", name="GeForce RTX 5070 Ti", aliases=("rtx 5070 ti", "5070 ti"), year=2025,
        peak=_geforce(8960, 2452, fp8=True),
        memory_bytes=16 * GIB, memory_bandwidth=896 * GBPS, board_power_w=300,
        pcie=Pcie(5, 16), nvlink_bandwidth=None, launch_price_usd=749,
        sources={
            "*": "NVIDIA GeForce RTX 5070 Family specifications (RTX 5070 Ti column: 8960 CUDA cores, 2.45 GHz "
                 "boost, 16 GB GDDR7 on 256 bits at 28 Gbps = 896 GB/s, 300 W total graphics power): "
                 "https://www.nvidia.com/en-us/geforce/graphics-cards/50-series/rtx-5070-family/",
            "flops": "computed as " + _RTX_BLACKWELL + " does for the RTX 5090: 8960 cores x 2 x 2452 MHz = "
                     "43.9 TFLOPS FP32",
            "price": "NVIDIA CES 2025 announcement: $749",
        },
        notes=_GEFORCE_NOTE + " No NVLink.",
    ),
    _card(
        key="rtx5080", name="GeForce RTX 5080", aliases=("rtx 5080", "5080"), year=2025,
        peak=_geforce(10752, 2617, fp8=True),
        memory_bytes=16 * GIB, memory_bandwidth=960 * GBPS, board_power_w=360,
        pcie=Pcie(5, 16), nvlink_bandwidth=None, launch_price_usd=999,
        sources={
            "*": _RTX_BLACKWELL + ", appendix A, and NVIDIA GeForce RTX 5080 specifications (10752 CUDA cores, "
                 "2.62 GHz boost, 16 GB GDDR7 on 256 bits at 30 Gbps = 960 GB/s, 360 W total graphics power): "
                 "https://www.nvidia.com/en-us/geforce/graphics-cards/50-series/rtx-5080/",
            "flops": "computed as " + _RTX_BLACKWELL + " does for the RTX 5090: 10752 cores x 2 x 2617 MHz = "
                     "56.3 TFLOPS FP32",
            "price": "NVIDIA CES 2025 announcement: $999",
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
    # -- Radeon RX 7000 (RDNA 3): AMD publishes FP32 (dual-issue) and FP16 (WMMA matrix) peaks only
    _card(
        key="rx7900xtx", name="Radeon RX 7900 XTX", aliases=("radeon rx 7900 xtx", "rx 7900 xtx", "7900 xtx"),
        year=2022,
        peak={"fp32": 61.4 * T, "fp16": 122.8 * T},
        memory_bytes=24 * GIB, memory_bandwidth=960 * GBPS, board_power_w=355,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=999,
        sources={
            "*": "AMD Radeon RX 7900 XTX specifications (96 compute units, 2.5 GHz boost; peak single precision "
                 "61.4 TFLOPS, peak half precision 122.8 TFLOPS; 24 GB GDDR6 at 20 Gbps on 384 bits = 960 GB/s; "
                 "355 W typical board power): https://www.amd.com/en/products/graphics/desktops/radeon/"
                 "7000-series/amd-radeon-rx-7900xtx.html",
            "price": "AMD announcement, Nov 2022: $999",
        },
        notes="FP32 counts RDNA 3's dual issue, which matmul kernels rarely reach; no bf16 or fp64 figure "
              "is published.",
    ),
    _card(
        key="rx7900xt", name="Radeon RX 7900 XT", aliases=("radeon rx 7900 xt", "rx 7900 xt", "7900 xt"), year=2022,
        peak={"fp32": 51.6 * T, "fp16": 103.2 * T},
        memory_bytes=20 * GIB, memory_bandwidth=800 * GBPS, board_power_w=315,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=899,
        sources={
            "*": "AMD Radeon RX 7900 XT specifications (84 compute units, 2.4 GHz boost; peak single precision "
                 "51.6 TFLOPS, peak half precision 103.2 TFLOPS; 20 GB GDDR6 at 20 Gbps on 320 bits = 800 GB/s; "
                 "315 W typical board power): https://www.amd.com/en/products/graphics/desktops/radeon/"
                 "7000-series/amd-radeon-rx-7900xt.html",
            "price": "AMD announcement, Nov 2022: $899",
        },
        notes="FP32 counts RDNA 3's dual issue; no bf16 or fp64 figure is published.",
    ),
    _card(
        key="rx7800xt", name="Radeon RX 7800 XT", aliases=("radeon rx 7800 xt", "rx 7800 xt", "7800 xt"), year=2023,
        peak={"fp32": 37.3 * T, "fp16": 74.6 * T},
        memory_bytes=16 * GIB, memory_bandwidth=624 * GBPS, board_power_w=263,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=499,
        sources={
            "*": "AMD Radeon RX 7800 XT specifications (60 compute units, 2.43 GHz boost; peak single precision "
                 "37.3 TFLOPS, peak half precision 74.6 TFLOPS; 16 GB GDDR6 at 19.5 Gbps on 256 bits = 624 GB/s; "
                 "263 W typical board power): https://www.amd.com/en/products/graphics/desktops/radeon/"
                 "7000-series/amd-radeon-rx-7800-xt.html",
            "price": "AMD announcement, Aug 2023: $499",
        },
        notes="FP32 counts RDNA 3's dual issue; no bf16 or fp64 figure is published.",
    ),
    # -- professional workstation cards: full-rate FP32 accumulate, unlike GeForce
    _card(
        key="rtxa6000", name="RTX A6000", aliases=("rtx a6000", "a6000"), year=2020,
        peak={"fp64": 0.605 * T, "fp32": 38.7 * T, "tf32": 38.7 * T, "fp16": 154.8 * T, "bf16": 154.8 * T},
        memory_bytes=48 * GIB, memory_bandwidth=768 * GBPS, board_power_w=300,
        pcie=Pcie(4, 16), nvlink_bandwidth=112.5 * GBPS, launch_price_usd=4650,
        sources={
            "*": "NVIDIA RTX A6000 datasheet (10752 CUDA cores; 38.7 TFLOPS FP32; 309.7 TFLOPS tensor, which is "
                 "FP16 with sparsity; 48 GB GDDR6, 768 GB/s; 300 W; NVLink 112.5 GB/s bidirectional): "
                 "https://www.nvidia.com/en-us/design-visualization/rtx-a6000/",
            "flops": "RTX A6000 datasheet: 309.7 TFLOPS sparse tensor = 154.8 dense FP16/BF16 (GA102's 1024 FLOP "
                     "per SM per clock x 84 SMs x 1.8 GHz, " + _GA10X + "); TF32 a quarter of that; FP64 FP32 / 64",
            "price": "NVIDIA list price at launch, Oct 2020: $4650",
        },
        notes="Full-rate FP16/BF16 with FP32 accumulate (a professional card).",
    ),
    _card(
        key="rtx6000ada", name="RTX 6000 Ada Generation", aliases=("rtx 6000 ada",),
        year=2022,
        peak={"fp64": 1.42 * T, "fp32": 91.1 * T, "tf32": 182.1 * T, "fp16": 364.2 * T, "bf16": 364.2 * T,
              "fp8": 728.5 * T},
        memory_bytes=48 * GIB, memory_bandwidth=960 * GBPS, board_power_w=300,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=6800,
        sources={
            "*": "NVIDIA RTX 6000 Ada Generation datasheet (18176 CUDA cores; 91.1 TFLOPS FP32; 1457 TFLOPS tensor, "
                 "which is FP8 with sparsity; 48 GB GDDR6, 960 GB/s; 300 W): "
                 "https://www.nvidia.com/en-us/design-visualization/rtx-6000/",
            "flops": "RTX 6000 Ada datasheet: 1457 TFLOPS sparse FP8 = 728.5 dense; FP16/BF16 half and TF32 a quarter "
                     "of FP8, the Ada tensor ratios (" + _ADA + "; the L40S datasheet, same AD102, quotes them); "
                     "FP64 FP32 / 64",
            "price": "NVIDIA list price at launch, Dec 2022: $6800",
        },
        notes="Full-rate FP16/BF16 with FP32 accumulate (a professional card). No NVLink.",
    ),
    # -- datacenter
    _card(
        key="l4", name="L4", aliases=("l4",), year=2023,
        peak={"fp32": 30.3 * T, "tf32": 60 * T, "fp16": 121 * T, "bf16": 121 * T, "fp8": 242.5 * T},
        memory_bytes=24 * GIB, memory_bandwidth=300 * GBPS, board_power_w=72,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=2500, datacenter=True,
        sources={
            "*": "NVIDIA L4 Tensor Core GPU product page and datasheet (30.3 TFLOPS FP32; TF32 120, FP16/BF16 242, "
                 "FP8 485 TFLOPS with sparsity, halved here; 24 GB GDDR6, 300 GB/s; 72 W; PCIe 4.0 x16): "
                 "https://www.nvidia.com/en-us/data-center/l4/",
            "price": "estimate: no list price is published; about $2500 retail "
                     "(https://www.runlocalai.co/hardware/nvidia-l4, read 2026)",
        },
        notes="No FP64 figure is published.",
    ),
    _card(
        key="l40s", name="L40S", aliases=("l40s",), year=2023,
        peak={"fp32": 91.6 * T, "tf32": 183 * T, "fp16": 362.05 * T, "bf16": 362.05 * T, "fp8": 733 * T},
        memory_bytes=48 * GIB, memory_bandwidth=864 * GBPS, board_power_w=350,
        pcie=Pcie(4, 16), nvlink_bandwidth=None, launch_price_usd=9000, datacenter=True,
        sources={
            "*": "NVIDIA L40S product page and datasheet (91.6 TFLOPS FP32; dense TF32 183, FP16/BF16 362.05, FP8 "
                 "733 TFLOPS; 48 GB GDDR6, 864 GB/s; 350 W; PCIe 4.0 x16): "
                 "https://www.nvidia.com/en-us/data-center/l40s/",
            "price": "estimate: no list price is published; $7k-$10k per card (https://datastorage.com/gpu/nvidia-l40s/), "
                     "$9000 'MSRP' (https://rentgpu.org/zh/gpus/l40s/ai-models), read 2026",
        },
        notes="No FP64 figure is published.",
    ),
    _card(
        key="a100", name="A100 SXM 80GB", aliases=("a100 sxm4 80gb", "a100 sxm 80gb", "a100 80gb sxm",
                                                   "a100 sxm4", "a100"),
        year=2020,
        peak={"fp64": 19.5 * T, "fp32": 19.5 * T, "tf32": 156 * T, "fp16": 312 * T, "bf16": 312 * T},
        memory_bytes=80 * GIB, memory_bandwidth=2039 * GBPS, board_power_w=400,
        pcie=Pcie(4, 16), nvlink_bandwidth=600 * GBPS, launch_price_usd=15000, datacenter=True,
        sources={
            "*": _A100_DATASHEET + " (A100 80GB SXM column)",
            "price": _DC_PRICE + " (A100 80GB about $15k; DGX A100 with 8 GPUs listed at $199k in 2020)",
        },
        achieved_flops={
            "bf16": _mamf(271.2, "row 'NVIDIA A100 SXM' (memory size not stated; SXM A100s share one clock), "
                                 "torch 2.6.0+cu126, 1024x10240x5120", "2025-01-04"),
            "fp16": Achieved(256.5 * T, "Azure/AI-benchmarking-guide, Azure_Results/ND_A100_v4_results.md, 'GEMM "
                                        "CuBLASLt' table (FP16, random data, 10,000 warm-ups; best size 16384^3; "
                                        "A100-SXM4-80GB, CUDA 12.5): https://github.com/Azure/AI-benchmarking-guide",
                             "2024-09-25"),
        },
        achieved_bandwidth={
            "copy": _azure(1.61, "Azure_Results/ND_A100_v4_results.md", "Copy, A100-SXM4-80GB, CUDA 12.5", "2024-09-25"),
            "triad": _azure(1.70, "Azure_Results/ND_A100_v4_results.md", "Triad, A100-SXM4-80GB, CUDA 12.5",
                            "2024-09-25"),
        },
    ),
    _card(
        key="a100-40gb", name="A100 SXM 40GB", aliases=("a100 sxm4 40gb", "a100 sxm 40gb", "a100 40gb sxm",
                                                        "a100 40gb"),
        year=2020,
        peak={"fp64": 19.5 * T, "fp32": 19.5 * T, "tf32": 156 * T, "fp16": 312 * T, "bf16": 312 * T},
        memory_bytes=40 * GIB, memory_bandwidth=1555 * GBPS, board_power_w=400,
        pcie=Pcie(4, 16), nvlink_bandwidth=600 * GBPS, launch_price_usd=10000, datacenter=True,
        sources={
            "*": _A100_DATASHEET + " (A100 40GB SXM column: 40 GB HBM2, 1555 GB/s, 400 W)",
            "price": _DC_PRICE + " (A100 40GB about $10k)",
        },
        achieved_flops={
            "bf16": _mamf(271.2, "row 'NVIDIA A100 SXM' (memory size not stated; SXM A100s share one clock), "
                                 "torch 2.6.0+cu126, 1024x10240x5120", "2025-01-04"),
        },
    ),
    _card(
        key="a100-pcie", name="A100 PCIe 80GB", aliases=("a100 80gb pcie", "a100 pcie 80gb", "a100 pcie"), year=2021,
        peak={"fp64": 19.5 * T, "fp32": 19.5 * T, "tf32": 156 * T, "fp16": 312 * T, "bf16": 312 * T},
        memory_bytes=80 * GIB, memory_bandwidth=1935 * GBPS, board_power_w=300,
        pcie=Pcie(4, 16), nvlink_bandwidth=600 * GBPS, launch_price_usd=15000, datacenter=True,
        sources={
            "*": _A100_DATASHEET + " (A100 80GB PCIe column: 80 GB HBM2e, 1935 GB/s, 300 W)",
            "nvlink": "A100 datasheet: NVLink bridge for 2 GPUs, 600 GB/s",
            "price": _DC_PRICE + " (A100 80GB about $15k)",
        },
        achieved_flops={
            "bf16": _mamf(252.9, "row 'NVIDIA A100 PCIe' (memory size not stated; PCIe A100s share one clock), "
                                 "torch 2.5.1+cu124, 2048x5120x6144", "2025-01-04"),
        },
    ),
    _card(
        key="a100-pcie-40gb", name="A100 PCIe 40GB", aliases=("a100 pcie 40gb", "a100 40gb pcie"), year=2020,
        peak={"fp64": 19.5 * T, "fp32": 19.5 * T, "tf32": 156 * T, "fp16": 312 * T, "bf16": 312 * T},
        memory_bytes=40 * GIB, memory_bandwidth=1555 * GBPS, board_power_w=250,
        pcie=Pcie(4, 16), nvlink_bandwidth=600 * GBPS, launch_price_usd=10000, datacenter=True,
        sources={
            "*": _A100_DATASHEET + " (A100 40GB PCIe column: 40 GB HBM2, 1555 GB/s, 250 W)",
            "nvlink": "A100 datasheet: NVLink bridge for 2 GPUs, 600 GB/s",
            "price": _DC_PRICE + " (A100 40GB about $10k)",
        },
        achieved_flops={
            "bf16": _mamf(252.9, "row 'NVIDIA A100 PCIe' (memory size not stated; PCIe A100s share one clock), "
                                 "torch 2.5.1+cu124, 2048x5120x6144", "2025-01-04"),
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
                 "sparse ones it quotes): " + _H100_DATASHEET,
            "price": _DC_PRICE + " (H100 SXM $25k-$40k)",
        },
        achieved_flops={
            "bf16": _mamf(794.5, "row 'NVIDIA H100 SXM', torch 2.7.0+cu126, 2048x2048x13312", "2025-01-05"),
            "fp8": _mamf(1402.6, "FP8 (float8_e4m3fn) table, row 'NVIDIA H100 SXM', torch 2.7.0+cu126, "
                                 "1024x9216x14336", "2025-01-05"),
        },
        achieved_bandwidth={
            "copy": _azure(2.90, "Azure_Results/ND_H100_v5_results.md", "Copy, H100 80GB HBM3, CUDA 12.6", "2024-09-24"),
            "triad": _azure(2.97, "Azure_Results/ND_H100_v5_results.md", "Triad, H100 80GB HBM3, CUDA 12.6",
                            "2024-09-24"),
        },
    ),
    _card(
        key="h100-pcie", name="H100 PCIe", aliases=("h100 pcie", "h100 80gb pcie", "h100 pcie 80gb"), year=2022,
        peak={"fp64": 51 * T, "fp32": 51 * T, "tf32": 378 * T, "fp16": 756 * T, "bf16": 756 * T, "fp8": 1513 * T},
        memory_bytes=80 * GIB, memory_bandwidth=2000 * GBPS, board_power_w=350,
        pcie=Pcie(5, 16), nvlink_bandwidth=600 * GBPS, launch_price_usd=25000, datacenter=True,
        sources={
            "*": "NVIDIA H100 Tensor Core GPU datasheet (H100 PCIe column; tensor figures halved from the "
                 "sparse ones it quotes): " + _H100_DATASHEET,
            "nvlink": "H100 datasheet: NVLink bridge 600 GB/s between pairs of PCIe cards",
            "price": _DC_PRICE + " (H100 PCIe about $25k)",
        },
        achieved_bandwidth={
            "triad": Achieved(1832 * GBPS, "te42kyfo/gpu-benches, gpu-stream/h100_pcie.txt (triad, the best of its "
                                           "occupancy sweep: 1024-thread blocks; NVIDIA-H100-PCIe, CUDA 11.7): "
                                           "https://github.com/te42kyfo/gpu-benches#gpu-stream", "2023-01-24"),
        },
    ),
    _card(
        key="h100-nvl", name="H100 NVL", aliases=("h100 nvl",), year=2023,
        peak={"fp64": 60 * T, "fp32": 60 * T, "tf32": 417.5 * T, "fp16": 835.5 * T, "bf16": 835.5 * T,
              "fp8": 1670.5 * T},
        memory_bytes=94 * GIB, memory_bandwidth=3900 * GBPS, board_power_w=400,
        pcie=Pcie(5, 16), nvlink_bandwidth=600 * GBPS, launch_price_usd=30000, datacenter=True,
        sources={
            "*": "NVIDIA H100 Tensor Core GPU datasheet (H100 NVL column, per GPU: FP64 tensor 60, FP32 60, TF32 835, "
                 "FP16/BF16 1671, FP8 3341 TFLOPS with sparsity, halved here; 94 GB HBM3, 3.9 TB/s; 350-400 W, the "
                 "maximum taken; NVLink bridge 600 GB/s; PCIe Gen5): " + _H100_DATASHEET,
            "price": _DC_PRICE + " (priced like the H100 PCIe and SXM, $25k-$30k)",
        },
        notes="A PCIe card sold in NVLink-bridged pairs; this row is one GPU.",
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
        achieved_flops={
            "bf16": _mamf(794.5, "BF16 table, row 'NVIDIA H100 SXM', whose note reads 'H200 is the same'; "
                                 "torch 2.7.0+cu126, 2048x2048x13312", "2025-01-05"),
            "fp8": _mamf(1453.4, "FP8 (float8_e4m3fn) table, row 'NVIDIA H200 SXM', torch 2.7.1+cu128, "
                                 "1280x4096x12032", "2025-07-08"),
        },
        achieved_bandwidth={
            "copy": _azure(4.01, "Azure_Results/ND_H200_v5_results.md", "Copy, H200 141GB, CUDA 12.6", "2024-09-24"),
            "triad": _azure(4.15, "Azure_Results/ND_H200_v5_results.md", "Triad, H200 141GB, CUDA 12.6", "2024-09-24"),
        },
    ),
    _card(
        key="gh200", name="GH200 96GB", aliases=("gh200 480gb", "gh200 96gb", "gh200"), year=2023,
        peak={"fp64": 67 * T, "fp32": 67 * T, "tf32": 494.5 * T, "fp16": 989.5 * T, "bf16": 989.5 * T,
              "fp8": 1979 * T},
        memory_bytes=96 * GIB, memory_bandwidth=4000 * GBPS, board_power_w=1000,
        pcie=Pcie(5, 16, c2c_bandwidth=450 * GBPS), nvlink_bandwidth=900 * GBPS, launch_price_usd=32000,
        datacenter=True,
        sources={
            "*": _GH200 + " (96 GB HBM3 version, reported as 'NVIDIA GH200 480GB' for its 480 GB of CPU memory: "
                          "FP64 tensor 67, FP32 67, TF32 989, FP16/BF16 1979, FP8 3958 TFLOPS with sparsity; 4 TB/s)",
            "power": "GH200 datasheet: 450 W to 1000 W, configurable, for the whole module (Grace CPU, Hopper GPU "
                     "and memory); the maximum is taken",
            "pcie": "GH200 datasheet: the GPU reaches the CPU over NVLink-C2C, 900 GB/s total, 450 per direction",
            "price": "estimate: no list price and no widely reported one; taken as the H200 SXM estimate (same "
                     "GH100 GPU), the Grace CPU not counted",
        },
        achieved_flops={
            "bf16": Achieved(821.0 * T, "stas00/ml-engineering pull request #60, mamf-finder on 'NVIDIA GH200 480GB' "
                                        "(96768 MB), torch 2.4.0a0 nv24.06, CUDA 12.5, best of 493,039 shapes at "
                                        "11264x19712x1536; in the MAMF table from commit b48e07c until the 141 GiB "
                                        "version replaced it: https://github.com/stas00/ml-engineering/pull/60",
                             "2024-08-12"),
        },
        notes="A Grace CPU and an H100-class GPU on one module; this row is the GPU, its power the module's.",
    ),
    _card(
        key="gh200-144gb", name="GH200 144GB HBM3e", aliases=("gh200 144g hbm3e", "gh200 144gb", "gh200 hbm3e"),
        year=2024,
        peak={"fp64": 67 * T, "fp32": 67 * T, "tf32": 494.5 * T, "fp16": 989.5 * T, "bf16": 989.5 * T,
              "fp8": 1979 * T},
        memory_bytes=144 * GIB, memory_bandwidth=4900 * GBPS, board_power_w=1000,
        pcie=Pcie(5, 16, c2c_bandwidth=450 * GBPS), nvlink_bandwidth=900 * GBPS, launch_price_usd=32000,
        datacenter=True,
        sources={
            "*": _GH200 + " (144 GB HBM3e version: same compute as the 96 GB one; 4.9 TB/s)",
            "power": "GH200 datasheet: 450 W to 1000 W, configurable, for the whole module (Grace CPU, Hopper GPU "
                     "and memory); the maximum is taken",
            "pcie": "GH200 datasheet: the GPU reaches the CPU over NVLink-C2C, 900 GB/s total, 450 per direction",
            "price": "estimate: no list price and no widely reported one; taken as the H200 SXM estimate (same "
                     "GH100 GPU), the Grace CPU not counted",
        },
        achieved_flops={
            "bf16": _mamf(828.6, "row 'NVIDIA GH200 SXM', noted '900W 141GiB HBM3e version', torch 2.6.0+cu126, "
                                 "1024x15360x4096", "2025-01-04"),
            "fp8": _mamf(1535.0, "FP8 (float8_e4m3fn) table, row 'NVIDIA GH200 SXM', 900 W 141 GiB HBM3e version, "
                                 "torch 2.6.0+cu126, 1024x14336x14336", "2025-01-04"),
        },
        notes="A Grace CPU and an H100-class GPU on one module; this row is the GPU, its power the module's.",
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
        achieved_flops={
            "bf16": _mamf(1745.0, "row 'NVIDIA B200 SXM', torch 2.7.1+cu128, 1792x16128x3072", "2025-07-07"),
            "fp8": _mamf(3432.5, "FP8 (float8_e4m3fn) table, row 'NVIDIA B200 SXM', torch 2.7.1+cu128, "
                                 "15360x4096x3072", "2025-07-09"),
        },
    ),
) + APPLE_GPUS


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
    """Like find_card, but an unknown name is the user's error: one line naming the closest known cards."""
    card = find_card(name)
    if card is None:
        raise FlopwattError(f"unknown card {name!r}; {_close_names(name)}")
    return card


def _close_names(name: str) -> str:
    spellings = {c.key: c for c in CARDS} | {c.name.lower(): c for c in CARDS}
    spellings |= {alias: c for c in CARDS for alias in c.aliases}
    close = difflib.get_close_matches(name.strip().lower(), spellings, n=8, cutoff=0.6)
    keys = list(dict.fromkeys(spellings[s].key for s in close))
    if keys:
        return f"did you mean {', '.join(keys)}?"
    return f"known cards: {', '.join(c.key for c in CARDS)}"


def normalize_dtype(dtype: str) -> str:
    """"bfloat16", "torch.bfloat16", "BF16" -> "bf16"."""
    d = dtype.strip().lower().removeprefix("torch.")
    return _DTYPE_ALIASES.get(d, d)


def peak_flops(card: Card, dtype: str) -> float | None:
    """Dense peak FLOP/s of `card` in `dtype`, or None where the card has no such rate."""
    return card.peak.get(normalize_dtype(dtype))


#: A run's metric -> the STREAM kernel whose published bandwidth it compares with.
_KERNEL_OF = {"mem_copy_bandwidth": "copy", "mem_triad_bandwidth": "triad"}


def datasheet_limit(card: Card, metric: str, dtype: str | None = None) -> tuple[float, str] | None:
    """The card's datasheet figure for a run's metric, with its source, or None where it has none:
    matmul_flops -> peak in that dtype; memory copy and triad -> memory bandwidth; host<->device -> link."""
    if metric == "matmul_flops":
        peak = peak_flops(card, dtype) if dtype else None
        return (peak, card.source("flops")) if peak else None
    if metric in _KERNEL_OF:
        return (card.memory_bandwidth, card.source("bandwidth")) if card.memory_bandwidth else None
    if metric in ("h2d_bandwidth", "d2h_bandwidth"):
        return (card.pcie.bandwidth, card.source("pcie")) if card.pcie else None
    return None


def achieved_limit(card: Card, metric: str, dtype: str | None = None) -> Achieved | None:
    """What the card was measured to reach for a run's metric, where someone published it."""
    if metric == "matmul_flops":
        return card.achievable(dtype) if dtype else None
    if metric in _KERNEL_OF:
        return card.achievable_bandwidth(_KERNEL_OF[metric])
    return None
