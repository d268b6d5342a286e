"""The reference card table: real device names resolve, every figure is positive and sourced."""

from __future__ import annotations

import pytest

from bench.errors import FlopwattError
from bench.hardware import CARDS, DTYPES, find_card, get_card, peak_flops


@pytest.mark.parametrize(
    ("device_name", "key"),
    [
        # Strings as torch.cuda.get_device_name() / nvidia-smi report them.
        ("NVIDIA GeForce GTX 1080", "gtx1080"),
        ("NVIDIA GeForce RTX 2080 Ti", "rtx2080ti"),
        ("NVIDIA GeForce RTX 3090", "rtx3090"),
        ("NVIDIA GeForce RTX 4090", "rtx4090"),
        ("NVIDIA GeForce RTX 5090", "rtx5090"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA B200", "b200"),
        # What a user types.
        ("4090", "rtx4090"),
        ("h100", "h100"),
        ("H100 PCIe", "h100-pcie"),
        ("gtx 1080", "gtx1080"),
    ],
)
def test_device_names_resolve(device_name: str, key: str) -> None:
    card = find_card(device_name)
    assert card is not None and card.key == key


@pytest.mark.parametrize(
    "device_name",
    [
        "NVIDIA GeForce GTX 1080 Ti",  # a different chip configuration (11 GB)
        "NVIDIA GeForce RTX 3090 Ti",
        "NVIDIA GeForce RTX 4090 Laptop GPU",  # AD103, 16 GB, 150 W: not a desktop 4090
        "NVIDIA GeForce RTX 4090 D",
        "NVIDIA A100-SXM4-40GB",
        "NVIDIA H100 NVL",
        "NVIDIA GeForce RTX 3080",
        "AMD Radeon RX 7900 XTX",
    ],
)
def test_other_cards_do_not_borrow_a_row(device_name: str) -> None:
    assert find_card(device_name) is None


def test_unknown_card_error_lists_known_cards() -> None:
    with pytest.raises(FlopwattError, match="unknown card 'Voodoo 2'.*rtx4090.*h200"):
        get_card("Voodoo 2")


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.key)
def test_every_card_is_sourced_and_positive(card) -> None:  # type: ignore[no-untyped-def]
    assert card.sources["*"]
    for figure in ("flops", "memory", "bandwidth", "power", "price", "pcie", "nvlink"):
        assert card.source(figure)
    assert card.peak and set(card.peak) <= set(DTYPES)
    assert all(v > 0 for v in card.peak.values())
    assert "fp32" in card.peak
    assert card.memory_bytes >= 8 * 2**30 and card.memory_bandwidth > 1e11
    assert 100 < card.board_power_w <= 1200
    assert card.launch_price_usd > 0 and 2015 <= card.year <= 2026
    assert card.pcie.generation in (3, 4, 5) and card.pcie.lanes == 16
    assert card.nvlink_bandwidth is None or card.nvlink_bandwidth > card.pcie.bandwidth


def test_peak_flops_by_dtype_spelling() -> None:
    h100 = get_card("h100")
    assert peak_flops(h100, "torch.bfloat16") == peak_flops(h100, "bf16") == pytest.approx(989.4e12)
    assert peak_flops(get_card("gtx1080"), "bf16") is None
    # GeForce tensor rates are the FP32-accumulate ones: twice the FP32 rate on Ampere/Ada/Blackwell.
    for key in ("rtx3090", "rtx4090", "rtx5090"):
        card = get_card(key)
        assert peak_flops(card, "fp16") == pytest.approx(2 * card.peak["fp32"], rel=0.01)


def test_best_training_dtype() -> None:
    assert get_card("gtx1080").best_training_dtype == "fp32"  # FP16 runs at 1/64 on GP104
    assert get_card("rtx2080ti").best_training_dtype == "fp16"  # Turing has no bf16
    assert get_card("h200").best_training_dtype == "bf16"


def test_h200_is_h100_compute_with_more_memory() -> None:
    h100, h200 = get_card("h100"), get_card("h200")
    assert dict(h100.peak) == dict(h200.peak)
    assert h200.memory_bytes > h100.memory_bytes and h200.memory_bandwidth > h100.memory_bandwidth


def test_pcie_bandwidth() -> None:
    # PCIe 4.0 x16: 16 GT/s x 16 lanes x 128/130 / 8 = 31.5 GB/s per direction.
    assert get_card("rtx4090").pcie.bandwidth == pytest.approx(31.5e9, rel=0.01)
