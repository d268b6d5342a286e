"""bench.plots: plotext's terminal plots as plain text, ticks on round values labelled in units, one
marker per series."""

from __future__ import annotations

import re

import pytest

from bench.plots import duration_ticks, line_plot, linear_ticks, round_ticks
from bench.units import duration_label, usd

DAY = 86400.0
YEAR = 365.25 * DAY


def y_labels(text: str) -> list[str]:
    """The y tick labels, top to bottom: what stands left of each ┤."""
    return [line.split("┤")[0].strip() for line in text.splitlines() if "┤" in line]


def x_labels(text: str) -> list[str]:
    """The x tick labels: the line under the axis (└┬───┬┘)."""
    lines = text.splitlines()
    return lines[next(i for i, line in enumerate(lines) if "└" in line) + 1].split()


def test_log_log_plot_labels_decades_in_units_and_draws_a_marker_per_series() -> None:
    text = line_plot([1, 10, 100, 1000], {"swarm": [100, 20, 5, None], "datacenter": [3, 3, 3, 3]},
                     title="Days to train", xlabel="nodes", ylabel="days", width=70, height=16)
    assert "\x1b[" not in text  # no colour codes: it prints through any console and reads in a test
    assert "Days to train" in text and "nodes" in text and "days" in text
    assert "* swarm" in text and "o datacenter" in text
    assert x_labels(text) == ["1", "10", "100", "1k"]  # decades: 1-2-5 steps would be 10 ticks, more than 7
    assert y_labels(text) == ["100", "50", "20", "10", "5"]  # 3 to 100 holds five 1-2-5 steps: they fit
    assert all(len(line) <= 70 for line in text.splitlines())


def test_the_legend_is_a_line_under_the_plot_so_no_point_hides_under_it() -> None:
    """A series whose highest points sit at the top left, where plotext puts its own legend: every
    one of its markers stays on the canvas, and the legend is the last line, one entry per series
    drawn (a series with no point has none)."""
    text = line_plot([1, 2, 3, 4], {"swarm": [1000, 900, 800, 700], "datacenter": [1, 1, 1, 1], "none": [None] * 4},
                     title="Days to train", xlabel="nodes", ylabel="days", log_x=False, log_y=False, width=60)
    lines = text.splitlines()
    assert lines[-1].split() == ["*", "swarm", "o", "datacenter"]
    top = lines[1 + next(i for i, line in enumerate(lines) if "┌" in line)]
    assert re.split("[│┤]", top)[1].startswith("*"), top  # the first point, at the top left corner
    assert not any("swarm" in line or "datacenter" in line for line in lines[:-1])


def test_the_issue_s_ranges_get_round_labels() -> None:
    """The sweep that printed 8225.2 / 1268.3 / 195.6 days and 5839720.8 / 1866981.2 USD."""
    nodes = [1.0, 10.0, 100.0, 1000.0, 10000.0]
    days = line_plot(nodes, {"swarm": [8225.2 * DAY, 1268.3 * DAY, 195.6 * DAY, 30.2 * DAY, 0.1 * DAY]},
                     title="Days to train", xlabel="swarm nodes", ylabel="calendar", y_ticks=duration_ticks,
                     y_format=duration_label)
    # 10 h is a round duration in range too, but it lands on 1 d's row: the whole day stays
    assert y_labels(days) == ["10 yr", "1 yr", "100 d", "10 d", "1 d"]
    assert x_labels(days) == ["1", "10", "100", "1k", "10k"]
    cost = line_plot(nodes, {"swarm": [6235.6, 19504.3, 190825.2, 1866981.2, 5839720.8]}, title="Cost in USD",
                     xlabel="swarm nodes", ylabel="USD", y_format=usd)
    assert y_labels(cost) == ["$1M", "$100k", "$10k"]


def test_a_linear_loss_curve_gets_round_ticks_and_nothing_to_plot_says_so() -> None:
    curve = line_plot([1, 2, 3], {"loss": [6.2, 5.1, 4.7]}, title="Loss", xlabel="step", ylabel="nats",
                      log_x=False, log_y=False)
    assert "Loss" in curve and "* loss" in curve
    assert y_labels(curve) == ["6", "5.5", "5"]
    assert x_labels(curve) == ["1", "1.5", "2", "2.5", "3"]
    assert line_plot([1, 2], {"a": [None, None]}, title="Empty", xlabel="x", ylabel="y") == "Empty: nothing to plot"


@pytest.mark.parametrize(
    ("lo", "hi", "most", "ticks"),
    [
        (0.1, 8225.0, 6, [0.1, 1.0, 10.0, 100.0, 1000.0]),  # decades: 1-2-5 would be 15
        (3.0, 100.0, 6, [5.0, 10.0, 20.0, 50.0, 100.0]),  # 1-2-5 steps fit
        (5.0, 500.0, 6, [10.0, 100.0]),  # 1-2-5 would be 7
        (1e-3, 1e6, 6, [1e-3, 0.1, 10.0, 1e3, 1e5]),  # ten decades: every other one
        (1.1, 1.9, 6, [1.2, 1.4, 1.6, 1.8]),  # narrower than a 1-2-5 step: even steps
        (0.9, 1.9, 6, [1.0, 1.2, 1.4, 1.6, 1.8]),  # one round value is not an axis: even steps
        (0.02, 0.07, 6, [0.02, 0.05]),
        (7.0, 7.0, 6, [7.0]),
    ],
)  # fmt: skip
def test_log_ticks(lo: float, hi: float, most: int, ticks: list[float]) -> None:
    assert round_ticks(lo, hi, True, most) == ticks


@pytest.mark.parametrize(
    ("lo", "hi", "most", "ticks"),
    [
        (4.7, 6.2, 6, [5.0, 5.5, 6.0]),
        (0.0, 1.0, 6, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (-3.0, 12.0, 4, [0.0, 5.0, 10.0]),
        (0.1, 0.3, 3, [0.1, 0.2, 0.3]),  # 0.1 + 0.2 is not 0.3 in floats; the ticks are the decimals
        (1234.0, 1236.0, 5, [1234.0, 1234.5, 1235.0, 1235.5, 1236.0]),
    ],
)  # fmt: skip
def test_linear_ticks(lo: float, hi: float, most: int, ticks: list[float]) -> None:
    assert linear_ticks(lo, hi, most) == ticks
    assert round_ticks(lo, hi, False, most) == ticks


@pytest.mark.parametrize(
    ("lo", "hi", "labels"),
    [
        (0.1 * DAY, 8225.2 * DAY, ["10 h", "1 d", "10 d", "100 d", "1 yr", "10 yr"]),
        (20.0, 5000.0, ["1 min", "10 min", "1 h"]),  # with 20 s and 50 s, 1-2-5 steps would be 9
        (2 * DAY, 5 * DAY, ["2 d", "5 d"]),
        (1.3 * DAY, 1.6 * DAY, ["1.3 d", "1.4 d", "1.5 d", "1.6 d"]),  # under a 1-2-5 step: even steps of a day
        (0.5, 90.0, ["1 s", "10 s", "1 min"]),  # 60 s is shown as 1 min, so it is the minutes' tick
        (3 * YEAR, 1500 * YEAR, ["5 yr", "10 yr", "20 yr", "50 yr", "100 yr", "200 yr", "500 yr", "1,000 yr"]),
    ],
)  # fmt: skip
def test_duration_ticks_are_round_in_the_unit_they_are_shown_in(lo: float, hi: float, labels: list[str]) -> None:
    most = 8 if hi > 100 * YEAR else 6
    assert [duration_label(t) for t in duration_ticks(lo, hi, True, most)] == labels


def test_ticks_sharing_a_row_keep_the_larger() -> None:
    from bench.plots import _apart

    hour, day = 3600.0, DAY
    # 13 rows from 2.4 h to 22.5 yr: 10 h and 1 d both land on row 2 (plotext's floor(0.5 + 12 x share))
    assert _apart([10 * hour, day, 10 * day], 0.1 * day, 8225.2 * day, True, 13) == [day, 10 * day]
    assert _apart([1.0, 2.0, 3.0], 1.0, 3.0, False, 3) == [1.0, 2.0, 3.0]
    assert _apart([1.0, 1.4, 3.0], 1.0, 3.0, False, 3) == [1.4, 3.0]


def test_duration_ticks_on_a_linear_axis_step_in_the_range_s_largest_unit() -> None:
    assert duration_ticks(0.0, 7200.0, False, 6) == [0.0, 1800.0, 3600.0, 5400.0, 7200.0]
    assert [duration_label(t) for t in duration_ticks(0.0, 7200.0, False, 6)] == ["0 s", "30 min", "1 h", "1.5 h",
                                                                                 "2 h"]


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(36000.0, "10 h"), (DAY, "1 d"), (100 * DAY, "100 d"), (YEAR, "1 yr"), (1.5 * YEAR, "1.5 yr"),
     (1000 * YEAR, "1,000 yr"), (60.0, "1 min"), (59.0, "59 s"), (0.25, "250 ms"), (2e-6, "2 µs"), (0.0, "0 s")],
)  # fmt: skip
def test_duration_label(seconds: float, label: str) -> None:
    assert duration_label(seconds) == label
