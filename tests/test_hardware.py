"""The reference card table: real device names resolve to their own row, figures match their sources."""

from __future__ import annotations

import re

import pytest

from bench.errors import FlopwattError
from bench.hardware import (
    APPLE_GPUS,
    CARDS,
    DTYPES,
    T,
    _geforce,
    achieved_limit,
    datasheet_limit,
    find_card,
    get_card,
    peak_flops,
)


@pytest.mark.parametrize(
    ("device_name", "key"),
    [
        # Strings as torch.cuda.get_device_name() / nvidia-smi / ROCm report them.
        ("NVIDIA GeForce GTX 1080", "gtx1080"),
        ("NVIDIA GeForce RTX 2080 Ti", "rtx2080ti"),
        ("NVIDIA GeForce RTX 3060", "rtx3060"),
        ("NVIDIA GeForce RTX 3060 Ti", "rtx3060ti"),
        ("NVIDIA GeForce RTX 3070", "rtx3070"),
        ("NVIDIA GeForce RTX 3080", "rtx3080"),
        ("NVIDIA GeForce RTX 3090", "rtx3090"),
        ("NVIDIA GeForce RTX 4060", "rtx4060"),
        ("NVIDIA GeForce RTX 4060 Ti", "rtx4060ti"),
        ("NVIDIA GeForce RTX 4070", "rtx4070"),
        ("NVIDIA GeForce RTX 4070 Ti", "rtx4070ti"),
        ("NVIDIA GeForce RTX 4080", "rtx4080"),
        ("NVIDIA GeForce RTX 4090", "rtx4090"),
        ("NVIDIA GeForce RTX 5070", "rtx5070"),
        ("NVIDIA GeForce RTX 5070 Ti", "rtx5070ti"),
        ("NVIDIA GeForce RTX 5080", "rtx5080"),
        ("NVIDIA GeForce RTX 5090", "rtx5090"),
        ("AMD Radeon RX 7900 XTX", "rx7900xtx"),
        ("AMD Radeon RX 7900 XT", "rx7900xt"),
        ("AMD Radeon RX 7800 XT", "rx7800xt"),
        ("NVIDIA RTX A6000", "rtxa6000"),
        ("NVIDIA RTX 6000 Ada Generation", "rtx6000ada"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie"),
        ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA GH200 480GB", "gh200"),
        ("NVIDIA GH200 144G HBM3e", "gh200-144gb"),
        ("NVIDIA B200", "b200"),
        # What a user types.
        ("4090", "rtx4090"),
        ("4060 ti", "rtx4060ti"),
        ("7900 xt", "rx7900xt"),
        ("h100", "h100"),
        ("H100 PCIe", "h100-pcie"),
        ("a100 40gb", "a100-40gb"),
        ("gh200", "gh200"),
        ("gtx 1080", "gtx1080"),
        ("rtx6000ada", "rtx6000ada"),
    ],
)
def test_device_names_resolve(device_name: str, key: str) -> None:
    card = find_card(device_name)
    assert card is not None and card.key == key


@pytest.mark.parametrize(
    "device_name",
    [
        "NVIDIA GeForce GTX 1080 Ti",  # a different chip configuration (11 GB)
        "NVIDIA GeForce RTX 3060 Laptop GPU",
        "NVIDIA GeForce RTX 3080 Ti",
        "NVIDIA GeForce RTX 3090 Ti",
        "NVIDIA GeForce RTX 4060 Laptop GPU",
        "NVIDIA GeForce RTX 4070 SUPER",
        "NVIDIA GeForce RTX 4070 Ti SUPER",
        "NVIDIA GeForce RTX 4080 SUPER",
        "NVIDIA GeForce RTX 4090 Laptop GPU",  # AD103, 16 GB, 150 W: not a desktop 4090
        "NVIDIA GeForce RTX 4090 D",
        "NVIDIA GeForce RTX 5070 Ti Laptop GPU",
        "NVIDIA GeForce RTX 5090 D",
        "AMD Radeon RX 7900 GRE",
        "Quadro RTX 6000",  # Turing, not the RTX 6000 Ada
        "NVIDIA RTX 5000 Ada Generation",
        "NVIDIA L40",
        "NVIDIA H200 NVL",
        "NVIDIA A800-SXM4-80GB",
    ],
)
def test_other_cards_do_not_borrow_a_row(device_name: str) -> None:
    assert find_card(device_name) is None


def test_variants_of_one_number_are_different_rows() -> None:
    pairs = [("RTX 4060", "RTX 4060 Ti"), ("RX 7900 XT", "RX 7900 XTX"), ("A100-SXM4-80GB", "A100-SXM4-40GB"),
             ("A100 80GB PCIe", "A100-PCIE-40GB"), ("H100 PCIe", "H100 NVL"), ("GH200 480GB", "GH200 144G HBM3e")]
    for a, b in pairs:
        card_a, card_b = find_card(a), find_card(b)
        assert card_a is not None and card_b is not None and card_a.key != card_b.key, (a, b)


def test_an_unknown_card_names_the_close_ones_on_one_line() -> None:
    with pytest.raises(FlopwattError) as raised:
        get_card("rtx 4095")
    message = str(raised.value)
    assert message.startswith("unknown card 'rtx 4095'; did you mean ") and "rtx4090" in message
    assert "\n" not in message and "h200" not in message  # close names only, not the whole table
    with pytest.raises(FlopwattError, match="unknown card 'Voodoo 2'; known cards: gtx1080, .*rtx4090.*h200"):
        get_card("Voodoo 2")


#: The cards with a datasheet of their own (an Apple GPU has no memory, power, link or price of its own).
BOARDS = [card for card in CARDS if card not in APPLE_GPUS]


@pytest.mark.parametrize("card", BOARDS, ids=lambda c: c.key)
def test_every_card_is_sourced_and_positive(card) -> None:  # type: ignore[no-untyped-def]
    assert card.sources["*"]
    assert "https://" in card.sources["*"] or "https://" in card.source("flops")
    for figure in ("flops", "memory", "bandwidth", "power", "price", "pcie", "nvlink"):
        assert card.source(figure)
    assert card.peak and set(card.peak) <= set(DTYPES)
    assert all(v > 0 for v in card.peak.values())
    assert "fp32" in card.peak
    assert card.memory_bytes >= 8 * 2**30 and card.memory_bandwidth > 1e11
    assert 60 < card.board_power_w <= 1200
    assert card.launch_price_usd > 0 and 2015 <= card.year <= 2026
    assert card.pcie.generation in (3, 4, 5) and card.pcie.lanes in (8, 16)
    assert card.nvlink_bandwidth is None or card.nvlink_bandwidth > card.pcie.bandwidth
    if not card.datacenter and "estimate" not in card.source("price"):
        assert "$" in card.source("price")


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.key)
def test_published_measurements_are_sourced_dated_and_below_the_datasheet(card) -> None:  # type: ignore[no-untyped-def]
    """A measured figure above its datasheet peak would be a unit slip (TFLOPS for GFLOPS, bits for bytes)."""
    for dtype, achieved in card.achieved_flops.items():
        assert 0.4 * card.peak[dtype] < achieved.value < card.peak[dtype], (dtype, achieved)
    for kernel, achieved in card.achieved_bandwidth.items():
        assert kernel in ("copy", "triad")
        assert 0.4 * card.memory_bandwidth < achieved.value < card.memory_bandwidth, (kernel, achieved)
    for achieved in [*card.achieved_flops.values(), *card.achieved_bandwidth.values()]:
        assert "https://github.com/" in achieved.source
        assert re.fullmatch(r"20\d\d-\d\d-\d\d", achieved.date)


@pytest.mark.parametrize(
    ("cores", "boost_mhz", "fp8", "published_tflops"),
    [
        # Appendix tables of the whitepapers, as printed: FP32, FP16/BF16 tensor with FP32 accumulate, FP8 likewise.
        (10496, 1695, False, {"fp32": "35.6", "tf32": "35.6", "fp16": "71"}),  # RTX 3090, GA102
        (8704, 1710, False, {"fp32": "29.8", "fp16": "59.5"}),  # RTX 3080, GA102
        (5888, 1725, False, {"fp32": "20.3", "fp16": "40.6"}),  # RTX 3070, GA104
        (16384, 2520, True, {"fp32": "82.6", "tf32": "82.6", "bf16": "165.2", "fp8": "330.3"}),  # RTX 4090, Ada
        (9728, 2505, True, {"fp32": "48.7", "fp16": "97.5", "fp8": "194.9"}),  # RTX 4080, Ada
        (21760, 2407, True, {"fp32": "104.8", "bf16": "209.5", "fp8": "419"}),  # RTX 5090, RTX Blackwell
    ],
)
def test_the_geforce_formula_gives_the_whitepapers_own_figures(
    cores: int, boost_mhz: float, fp8: bool, published_tflops: dict[str, str]
) -> None:
    peak = _geforce(cores, boost_mhz, fp8=fp8)
    for dtype, printed in published_tflops.items():
        decimals = len(printed.partition(".")[2])
        # equal once rounded as the whitepaper rounds
        assert peak[dtype] == pytest.approx(float(printed) * T, abs=0.5 * 10**-decimals * T), dtype
    assert peak["fp64"] == peak["fp32"] / 64
    assert ("fp8" in peak) is fp8


def test_exact_values_against_their_sources() -> None:
    # product pages: cores x 2 x boost clock
    assert get_card("rtx3060").peak["fp32"] == 3584 * 2 * 1777e6
    assert get_card("rtx4060ti").peak["bf16"] == 2 * 4352 * 2 * 2535e6
    assert get_card("rtx5070ti").peak["fp8"] == 4 * 8960 * 2 * 2452e6
    assert get_card("rtx4060ti").memory_bandwidth == 288e9 and get_card("rtx4060ti").pcie.lanes == 8
    assert get_card("rtx5080").memory_bytes == 16 * 2**30 and get_card("rtx5080").board_power_w == 360
    # AMD publishes the FP16 matrix rate and nothing for bf16
    xtx = get_card("rx7900xtx")
    assert xtx.peak["fp16"] == 122.8e12 and "bf16" not in xtx.peak and xtx.best_training_dtype == "fp16"
    # datasheets quoting sparse tensor figures, halved
    assert get_card("l4").peak["bf16"] == 242e12 / 2 and get_card("l4").board_power_w == 72
    assert get_card("h100-nvl").peak["bf16"] == 1671e12 / 2 and get_card("h100-nvl").memory_bytes == 94 * 2**30
    assert get_card("rtxa6000").peak["fp16"] == pytest.approx(309.7e12 / 2, abs=0.05e12)
    assert get_card("a100-40gb").memory_bandwidth == 1555e9 and get_card("a100-pcie").board_power_w == 300
    # GH200's GPU talks to its CPU over NVLink-C2C: 900 GB/s both ways, not PCIe's 63 GB/s
    assert get_card("gh200").pcie.bandwidth == 450e9


def test_measured_achievable_figures_match_their_sources() -> None:
    h100 = get_card("h100")
    bf16 = h100.achievable("bf16")
    assert bf16 is not None and bf16.value == 794.5e12 and bf16.date == "2025-01-05"
    assert "ml-engineering" in bf16.source and "2048x2048x13312" in bf16.source
    assert h100.achievable("torch.bfloat16") == bf16
    assert h100.achievable("fp32") is None  # nobody published one: absent, never derived
    assert get_card("h200").achievable("fp8").value == 1453.4e12  # type: ignore[union-attr]
    assert get_card("gh200").achievable("bf16").value == 821.0e12  # type: ignore[union-attr]
    assert get_card("b200").achievable("fp8").value == 3432.5e12  # type: ignore[union-attr]
    a100 = get_card("a100")
    assert a100.achievable_bandwidth("copy").value == 1.61e12  # type: ignore[union-attr]
    assert a100.achievable_bandwidth("triad").value == 1.70e12  # type: ignore[union-attr]
    assert get_card("h100-pcie").achievable_bandwidth("triad").value == 1832e9  # type: ignore[union-attr]
    assert get_card("h100-pcie").achievable_bandwidth("copy") is None
    assert get_card("rtx2080ti").achievable_bandwidth("triad").value == 556.8e9  # type: ignore[union-attr]
    assert get_card("rtx4090").achievable("bf16") is None


def test_a_runs_metric_finds_the_cards_figure_in_the_same_dtype() -> None:
    xtx, h100 = get_card("rx7900xtx"), get_card("h100")
    assert datasheet_limit(xtx, "matmul_flops", "float16") == (122.8e12, xtx.source("flops"))
    assert datasheet_limit(xtx, "matmul_flops", "bf16") is None  # never another dtype's peak
    assert datasheet_limit(h100, "matmul_flops", "fp8") == (1978.9e12, h100.source("flops"))
    assert datasheet_limit(h100, "mem_copy_bandwidth") == (3350e9, h100.source("bandwidth"))
    assert datasheet_limit(h100, "h2d_bandwidth") == (h100.pcie.bandwidth, h100.source("pcie"))
    assert datasheet_limit(h100, "train_tokens_per_s") is None
    assert achieved_limit(h100, "matmul_flops", "bfloat16") == h100.achievable("bf16")
    assert achieved_limit(h100, "mem_copy_bandwidth") == h100.achievable_bandwidth("copy")
    assert achieved_limit(h100, "mem_triad_bandwidth") == h100.achievable_bandwidth("triad")
    assert achieved_limit(h100, "h2d_bandwidth") is None


def test_peak_flops_by_dtype_spelling() -> None:
    h100 = get_card("h100")
    assert peak_flops(h100, "torch.bfloat16") == peak_flops(h100, "bf16") == pytest.approx(989.4e12)
    assert peak_flops(get_card("gtx1080"), "bf16") is None
    # GeForce tensor rates are the FP32-accumulate ones: twice the FP32 rate on Ampere/Ada/Blackwell.
    for card in CARDS:
        if card.name.startswith("GeForce RTX") and card.key != "rtx2080ti":
            assert peak_flops(card, "fp16") == pytest.approx(2 * card.peak["fp32"], rel=0.01), card.key


def test_best_training_dtype() -> None:
    assert get_card("gtx1080").best_training_dtype == "fp32"  # FP16 runs at 1/64 on GP104
    assert get_card("rtx2080ti").best_training_dtype == "fp16"  # Turing has no bf16
    assert get_card("h200").best_training_dtype == "bf16"


def test_h200_is_h100_compute_with_more_memory() -> None:
    h100, h200 = get_card("h100"), get_card("h200")
    assert dict(h100.peak) == dict(h200.peak)
    assert h200.memory_bytes > h100.memory_bytes and h200.memory_bandwidth > h100.memory_bandwidth


def test_pcie_bandwidth() -> None:
    # PCIe 4.0 x16: 16 GT/s x 16 lanes x 128/130 / 8 = 31.5 GB/s per direction; x8 half of it.
    assert get_card("rtx4090").pcie.bandwidth == pytest.approx(31.5e9, rel=0.01)
    assert get_card("rtx4060").pcie.bandwidth == pytest.approx(31.5e9 / 2, rel=0.01)


#: Apple's own figures, typed here from the sources each row cites (TFLOPS FP32, GB/s); None: not published.
APPLE_FIGURES = {
    "m1-8c": (2.6, None), "m1-pro-14c": (None, 200), "m1-pro-16c": (5.2, 200),
    "m1-max-24c": (None, 400), "m1-max-32c": (10.4, 400), "m1-ultra-48c": (None, 800), "m1-ultra-64c": (21, 800),
    "m2-8c": (None, 100), "m2-10c": (None, 100), "m2-pro-16c": (None, 200), "m2-pro-19c": (None, 200),
    "m2-max-30c": (None, 400), "m2-max-38c": (None, 400), "m2-ultra-60c": (None, 800), "m2-ultra-76c": (None, 800),
    "m4-pro-16c": (None, 273), "m4-pro-20c": (None, 273), "m4-max-40c": (None, 546),
}


def test_apple_gpus_carry_exactly_apples_figures_and_nothing_else() -> None:
    assert {card.key for card in APPLE_GPUS} == set(APPLE_FIGURES)
    for card in APPLE_GPUS:
        tflops, gbps = APPLE_FIGURES[card.key]
        assert dict(card.peak) == ({"fp32": tflops * 1e12} if tflops else {}), card.key
        assert card.memory_bandwidth == (gbps * 1e9 if gbps else None), card.key
        assert (card.memory_bytes, card.board_power_w, card.pcie, card.launch_price_usd) == (None,) * 4
        assert card.achieved_flops == {} and card.achieved_bandwidth == {}
        if tflops:
            assert f"{tflops:g} teraflops" in card.source("flops") and "Apple" in card.source("flops")
        else:
            assert "Apple states no FLOP/s" in card.source("flops")
        if gbps:
            assert f"{gbps}GB/s" in card.source("bandwidth") and "https://" in card.source("bandwidth")
        for figure in ("power", "price", "pcie", "memory"):
            assert "Apple publishes no" in card.source(figure)


@pytest.mark.parametrize(
    ("device_name", "key"),
    [
        ("Apple M2 Max GPU (38-core)", "m2-max-38c"),
        ("Apple M2 Max GPU (30-core)", "m2-max-30c"),
        ("Apple M1 Max GPU (32-core)", "m1-max-32c"),
        ("Apple M1 GPU (8-core)", "m1-8c"),
        ("Apple M1 Ultra GPU (64-core)", "m1-ultra-64c"),
        ("Apple M4 Pro GPU (20-core)", "m4-pro-20c"),
        ("M1 Max 32-core", "m1-max-32c"),
        ("m2-ultra-76c", "m2-ultra-76c"),
    ],
)
def test_an_apple_gpu_is_found_by_chip_and_core_count(device_name: str, key: str) -> None:
    card = find_card(device_name)
    assert card is not None and card.key == key


def test_the_m2_max_38_core_row_has_exactly_its_cited_numbers() -> None:
    card = find_card("Apple M2 Max GPU (38-core)")
    assert card is not None and card.memory_bandwidth == 400e9 and dict(card.peak) == {}
    assert datasheet_limit(card, "mem_copy_bandwidth") == (400e9, card.source("bandwidth"))
    assert datasheet_limit(card, "matmul_flops", "fp32") is None  # Apple states no M2 FLOP/s
    assert datasheet_limit(card, "h2d_bandwidth") is None
    m1_max = get_card("m1-max-32c")
    assert datasheet_limit(m1_max, "matmul_flops", "fp32") == (10.4e12, m1_max.source("flops"))
    assert datasheet_limit(m1_max, "matmul_flops", "bf16") is None


@pytest.mark.parametrize(
    "device_name",
    ["Apple M1 GPU", "Apple M1 Pro GPU", "Apple M1 Max GPU", "Apple M1 Ultra GPU", "Apple M2 GPU", "Apple M2 Max GPU",
     "Apple M4 Max GPU", "Apple M1 GPU (7-core)", "Apple M3 Max GPU (40-core)", "Apple M4 Max GPU (32-core)",
     "Apple M1 Max GPU (38-core)"],
)
def test_an_apple_gpu_without_a_known_core_count_matches_no_row(device_name: str) -> None:
    """MPS names the GPU by chip alone: a 24-core and a 32-core M1 Max must not share a row."""
    assert find_card(device_name) is None


def test_a_chip_without_its_core_count_names_its_configurations() -> None:
    with pytest.raises(FlopwattError, match=r"^unknown card 'M1 Max'; did you mean m1-max-32c, m1-max-24c\?$"):
        get_card("M1 Max")
