"""Memory budgets that see PyTorch's allocator cache, and telling a spill to system RAM.

The CUDA memory queries are fed recorded-style numbers (there is no GPU here); what is checked is
the arithmetic that turns them into a budget, never what a driver reports.
"""

from __future__ import annotations

import pytest
import torch

from probes.devices import cuda_budget, release, spilled_to_host, usable_cuda_bytes

GB = 1_000_000_000


def test_cached_unused_blocks_count_as_usable() -> None:
    # 2 GB free to the driver; torch holds 5 GB of which 1 GB is in use: 4 GB is cached and reusable.
    assert usable_cuda_bytes(free=2 * GB, reserved=5 * GB, allocated=1 * GB) == 6 * GB
    assert usable_cuda_bytes(free=2 * GB, reserved=0, allocated=0) == 2 * GB
    # allocated can pass reserved only through the allocator's rounding: never a negative cache
    assert usable_cuda_bytes(free=2 * GB, reserved=1 * GB, allocated=1 * GB + 512) == 2 * GB


def test_cuda_budget_reads_the_driver_and_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[object] = []

    def recorded(value: object):  # type: ignore[no-untyped-def]
        def query(device: object = None) -> object:
            asked.append(device)
            return value

        return query

    monkeypatch.setattr(torch.cuda, "mem_get_info", recorded((7_300_000_000, 8_585_216_000)))  # an idle 8 GB card
    monkeypatch.setattr(torch.cuda, "memory_reserved", recorded(4_500_000_000))
    monkeypatch.setattr(torch.cuda, "memory_allocated", recorded(500_000_000))
    assert cuda_budget("cuda:1") == 7_300_000_000 + 4_000_000_000
    assert asked == [torch.device("cuda", 1)] * 3  # every question about the probed card


@pytest.mark.parametrize(
    ("peak_reserved", "spilled"),
    [
        (3 * GB + 20 * GB, False),  # everything the card had, and no more
        (3 * GB + 20 * GB + 1, True),  # one byte past it came from system RAM
        (10 * GB, False),
    ],
)
def test_a_try_that_held_more_than_the_card_could_give_spilled(peak_reserved: int, spilled: bool) -> None:
    """A 24 GB card: torch held 3 GB when the try began and the driver had 20 GB free."""
    assert spilled_to_host(peak_reserved, start_reserved=3 * GB, start_free=20 * GB) is spilled


def test_release_on_the_cpu_is_harmless() -> None:
    release("cpu")
    release(torch.device("cpu"))
