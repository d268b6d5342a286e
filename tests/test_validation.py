"""The server's checks (bench/server/validation.py), each flag at both sides of its threshold.

These call the functions directly and compare the exact reasons; tests/test_server.py shows that a
flagged run is stored, answered with its reason and kept out of the leaderboard.
"""

from __future__ import annotations

import pytest

from bench.document import SCHEMA_VERSION, RunDocument
from bench.server.errors import ApiError
from bench.server.validation import (
    check_document,
    device_model,
    implausible,
    leaderboard_dtype,
    shared_machine,
)
from probes.measurement import Energy, Measurement
from server_support import make_doc

#: The RTX 4090's datasheet figures (bench/hardware.py; test_hardware pins them), written out here
#: so that a wrong factor in validation.py cannot hide behind the same table lookup.
RTX4090_BF16 = 165.2e12
RTX4090_FP32 = 82.6e12
RTX4090_MEMORY = 1008e9
RTX4090_PCIE = 31.5076923076923e9  # PCIe 4.0 x16: 16 GT/s x 16 lanes x 128/130 / 8
RTX4090_BOARD_W = 450.0
#: What the database columns hold: a BIGINT, and index keys kept short (literals, not validation's names).
MAX_INTEGER = 2**63 - 1
MAX_KEY_CHARS = 128


def figure(metric: str, value: float, *, unit: str, dtype: str | None = None, device: str = "cuda:0",
           watts: float | None = None, probe: str = "compute", **params: object) -> Measurement:  # fmt: skip
    energy = Energy(method="nvml-counter", joules=watts * 10, watts_avg=watts, seconds=10.0) if watts else None
    return Measurement(probe=probe, metric=metric, unit=unit, dtype=dtype, device=device, samples=[value],
                       params=params, energy=energy)  # fmt: skip


def run_with(*measurements: Measurement) -> RunDocument:
    """make_doc's machine (a Ryzen and an RTX 4090 as cuda:0) with only these measurements."""
    return make_doc().model_copy(update={"measurements": list(measurements)})


def matmul(value: float, dtype: str = "bf16", **kw: object) -> Measurement:
    return figure("matmul_flops", value, unit="FLOP/s", dtype=dtype, **kw)  # type: ignore[arg-type]


# -- implausible: figures against the datasheet ----------------------------------------------


def test_a_figure_just_over_twice_the_datasheet_is_flagged_with_its_ratio() -> None:
    assert implausible(run_with(matmul(2.1 * RTX4090_BF16))) == [
        "measurements.0: matmul_flops bf16 3.469e+14 FLOP/s is 2.1x the GeForce RTX 4090 datasheet figure "
        "(1.652e+14 FLOP/s)"
    ]


@pytest.mark.parametrize("factor", [1.9, 2.0])
def test_a_figure_up_to_twice_the_datasheet_is_not_flagged(factor: float) -> None:
    assert implausible(run_with(matmul(factor * RTX4090_BF16))) == []


def test_each_dtype_is_held_to_its_own_peak() -> None:
    """fp32 at 2.1x fp32's peak is flagged though it is far below bf16's; bf16 at 1.9x is not."""
    doc = run_with(matmul(1.9 * RTX4090_BF16), matmul(2.1 * RTX4090_FP32, dtype="float32"))
    assert implausible(doc) == [
        "measurements.1: matmul_flops float32 1.735e+14 FLOP/s is 2.1x the GeForce RTX 4090 datasheet figure "
        "(8.26e+13 FLOP/s)"
    ]


@pytest.mark.parametrize(
    "metric, limit",
    [
        ("mem_copy_bandwidth", RTX4090_MEMORY),
        ("mem_triad_bandwidth", RTX4090_MEMORY),
        ("h2d_bandwidth", RTX4090_PCIE),
        ("d2h_bandwidth", RTX4090_PCIE),
    ],
)
def test_bandwidths_are_held_to_the_memory_and_pcie_datasheet(metric: str, limit: float) -> None:
    flagged, fine = figure(metric, 2.1 * limit, unit="B/s", probe="memory"), figure(metric, 1.9 * limit, unit="B/s")
    [reason] = implausible(run_with(flagged, fine))
    assert reason == (
        f"measurements.0: {metric} {2.1 * limit:.4g} B/s is 2.1x the GeForce RTX 4090 datasheet figure ({limit:.4g} B/s)"
    )


def test_figures_without_a_datasheet_limit_are_not_judged() -> None:
    doc = run_with(
        matmul(100 * RTX4090_BF16, dtype=None),  # no dtype: no row of the table applies
        figure("train_tokens_per_s", 1e15, unit="tokens/s", dtype="bf16", probe="training"),
        figure("allreduce_busbw", 1e15, unit="B/s", dtype="float32", probe="collective"),
        matmul(100 * RTX4090_BF16, device="cpu"),  # the CPU is not a card
        matmul(100 * RTX4090_BF16, device="cuda:7"),  # no such device in the run
    )
    assert implausible(doc) == []


def test_a_cpu_is_never_held_to_a_card_even_one_named_like_it() -> None:
    doc = make_doc(cpu="NVIDIA GeForce RTX 4090")
    doc = doc.model_copy(update={"measurements": [matmul(100 * RTX4090_BF16, device="cpu", watts=1.0)]})
    assert implausible(doc) == []
    assert implausible(RunDocument.model_validate_json(doc.to_json())) == []  # as the server parses it


def test_an_unknown_device_does_not_stop_the_checks_of_the_figures_after_it() -> None:
    doc = run_with(matmul(1e18, device="cuda:7"), matmul(1e18, device="cpu"), matmul(2.1 * RTX4090_BF16))
    assert [r.split(":")[0] for r in implausible(doc)] == ["measurements.2"]


def test_a_device_missing_from_the_card_table_is_not_judged() -> None:
    doc = make_doc(gpu="Some Future GPU 9000")
    doc = doc.model_copy(update={"measurements": [matmul(1e18, watts=5000.0)]})
    assert implausible(doc) == []


# -- implausible: MFU and power ---------------------------------------------------------------


def test_an_mfu_above_one_is_flagged_on_any_device() -> None:
    doc = run_with(
        figure("train_mfu", 1.0, unit="ratio", probe="training"),
        figure("train_mfu", 1.2, unit="ratio", probe="training", device="cpu"),
        figure("train_mfu", 0.45, unit="ratio", probe="training"),
    )
    assert implausible(doc) == ["measurements.1: train_mfu 1.2 is above 1, which no hardware reaches"]
    # The same document as the server gets it: parsed from JSON (its strings are not the literals here)
    assert implausible(RunDocument.model_validate_json(doc.to_json())) == implausible(doc)


def test_power_above_twice_the_board_power_is_flagged() -> None:
    doc = run_with(matmul(150e12, watts=2 * RTX4090_BOARD_W), matmul(150e12, watts=1000.0))
    assert implausible(doc) == [
        "measurements.1: 1000 W average is over 2x the GeForce RTX 4090 board power (450 W)"
    ]


def test_power_below_five_percent_of_the_board_power_is_flagged() -> None:
    doc = run_with(matmul(150e12, watts=0.05 * RTX4090_BOARD_W), matmul(150e12, watts=10.0))
    assert implausible(doc) == [
        "measurements.1: 10.0 W average under load is below 5% of the GeForce RTX 4090 board power (450 W)"
    ]


def test_every_reason_of_a_run_is_given_in_order() -> None:
    doc = run_with(matmul(3 * RTX4090_BF16, watts=10.0), figure("train_mfu", 1.5, unit="ratio", probe="training"))
    assert implausible(doc) == [
        "measurements.0: matmul_flops bf16 4.956e+14 FLOP/s is 3.0x the GeForce RTX 4090 datasheet figure "
        "(1.652e+14 FLOP/s)",
        "measurements.0: 10.0 W average under load is below 5% of the GeForce RTX 4090 board power (450 W)",
        "measurements.1: train_mfu 1.5 is above 1, which no hardware reaches",
    ]


# -- shared_machine ---------------------------------------------------------------------------


def test_a_quarter_of_the_cpu_used_by_others_is_flagged_just_under_it_is_not() -> None:
    doc = run_with(matmul(150e12, background_cpu=0.249), matmul(150e12, dtype="fp32", background_cpu=0.25))
    assert shared_machine(doc) == ["measurements.1: compute on cuda:0 ran while other processes used 25% of the CPU"]


def test_time_the_hypervisor_took_is_flagged() -> None:
    doc = run_with(matmul(150e12, steal_cpu=0.3), matmul(150e12, dtype="fp32", probe="memory", steal_cpu=0.249))
    assert shared_machine(doc) == ["measurements.0: compute on cuda:0 ran while the hypervisor took 30% of the CPU"]


def test_one_reason_per_probe_device_and_share() -> None:
    doc = run_with(
        matmul(150e12, background_cpu=0.5, steal_cpu=0.4),
        matmul(75e12, dtype="fp32", background_cpu=0.5),  # same probe and device: already said
        matmul(1e12, device="cpu", background_cpu=0.5),
        figure("mem_copy_bandwidth", 1e11, unit="B/s", probe="memory", background_cpu=0.6),
    )
    assert shared_machine(doc) == [
        "measurements.0: compute on cuda:0 ran while other processes used 50% of the CPU",
        "measurements.0: compute on cuda:0 ran while the hypervisor took 40% of the CPU",
        "measurements.2: compute on cpu ran while other processes used 50% of the CPU",
        "measurements.3: memory on cuda:0 ran while other processes used 60% of the CPU",
    ]


def test_shares_that_are_not_numbers_are_ignored() -> None:
    doc = run_with(matmul(150e12, background_cpu="0.9", steal_cpu=None), matmul(150e12, dtype="fp32", background_cpu=1))
    assert shared_machine(doc) == ["measurements.1: compute on cuda:0 ran while other processes used 100% of the CPU"]


# -- check_document ---------------------------------------------------------------------------


def refusal(doc: RunDocument) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as caught:
        check_document(doc)
    return caught.value.status, caught.value.field, caught.value.message


def with_params(**params: object) -> RunDocument:
    return run_with(matmul(150e12, **params))


def test_a_clean_document_passes() -> None:
    check_document(make_doc())
    check_document(with_params(largest=MAX_INTEGER, zero=0, none=0.0, name="Grafikkarte für 4 € — ok", seq=[1, (2, 3.5)]))


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, SCHEMA_VERSION - 1])
def test_another_schema_version_is_refused(version: int) -> None:
    doc = make_doc().model_copy(update={"schema_version": version})
    assert refusal(doc) == (422, "schema_version", f"schema_version {version} is not supported (this server reads 1)")


def test_only_what_was_sent_is_judged_not_what_is_computed_from_it() -> None:
    """A tiny average power makes the computed efficiency infinite; the document itself is valid
    (the leaderboard leaves such an efficiency out, see service.figures_of)."""
    check_document(run_with(matmul(150e12, watts=1e-310)))


@pytest.mark.parametrize(
    "value, message",
    [
        (float("nan"), "must be a finite number, got nan"),
        (float("inf"), "must be a finite number, got inf"),
        (-0.5, "must be non-negative, got -0.5"),
        (-1, "must be non-negative, got -1"),
        (MAX_INTEGER + 1, f"must be at most {MAX_INTEGER}"),
    ],
)
def test_numbers_must_be_finite_non_negative_and_storable(value: float, message: str) -> None:
    assert refusal(with_params(x=value)) == (422, "measurements.0.params.x", message)


def test_numbers_are_checked_inside_lists_and_tuples() -> None:
    assert refusal(with_params(x=[1.0, (2.0, -3.0)]))[1] == "measurements.0.params.x.1.1"


@pytest.mark.parametrize(
    "params, field, message",
    [
        ({"x": "a\x00b"}, "measurements.0.params.x", "must not contain NUL characters"),
        ({"a\x00b": 1}, "measurements.0.params.a\x00b", "must not contain NUL characters"),
        ({"x": "lone \ud800"}, "measurements.0.params.x", "must be valid Unicode (no lone surrogates)"),
        ({"\udfff": 1}, "measurements.0.params.\udfff", "must be valid Unicode (no lone surrogates)"),
    ],
)
def test_text_and_keys_must_be_storable(params: dict, field: str, message: str) -> None:
    assert refusal(with_params(**params)) == (422, field, message)


def test_a_device_id_twice_is_refused() -> None:
    doc = make_doc()
    doc = doc.model_copy(update={"devices": [*doc.devices, doc.devices[1]]})
    assert refusal(doc) == (422, "devices.2.id", "device id 'cuda:0' appears twice")


@pytest.mark.parametrize("where", ["id", "name"])
def test_device_keys_are_at_most_128_characters(where: str) -> None:
    doc = make_doc()
    for length, refused in ((MAX_KEY_CHARS, False), (MAX_KEY_CHARS + 1, True)):
        gpu = doc.devices[1].model_copy(update={where: "x" * length})
        changed = doc.model_copy(update={"devices": [doc.devices[0], gpu]})
        if refused:
            assert refusal(changed) == (422, f"devices.1.{where}", "must be at most 128 characters")
        else:
            check_document(changed)


@pytest.mark.parametrize("where", ["dtype", "variant", "device"])
def test_measurement_keys_are_at_most_128_characters(where: str) -> None:
    fine = matmul(1.0).model_copy(update={where: "x" * MAX_KEY_CHARS})
    long = matmul(1.0).model_copy(update={where: "x" * (MAX_KEY_CHARS + 1)})
    check_document(run_with(fine))
    assert refusal(run_with(fine, long)) == (422, f"measurements.1.{where}", "must be at most 128 characters")


# -- keys ------------------------------------------------------------------------------------


def test_a_device_is_keyed_by_its_reference_card_or_its_own_spaced_name() -> None:
    assert device_model("NVIDIA GeForce RTX 4090") == "GeForce RTX 4090"
    assert device_model("  Some   Future\tGPU ") == "Some Future GPU"


@pytest.mark.parametrize("dtype, key", [(None, ""), ("", ""), ("bfloat16", "bf16"), ("float32", "fp32"), ("fp16", "fp16")])
def test_dtypes_are_keyed_by_the_table_spelling(dtype: str | None, key: str) -> None:
    assert leaderboard_dtype(dtype) == key
