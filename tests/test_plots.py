"""bench.plots: plotext's terminal plots as plain text, log axes labelled, one marker per series."""

from __future__ import annotations

from bench.plots import line_plot


def test_log_log_plot_with_labelled_ticks_and_a_marker_per_series() -> None:
    text = line_plot([1, 10, 100, 1000], {"swarm": [100, 20, 5, None], "datacenter": [3, 3, 3, 3]},
                     title="Days to train", xlabel="nodes", ylabel="days", width=70, height=16)
    assert "\x1b[" not in text  # no colour codes: it prints through any console and reads in a test
    assert "Days to train" in text and "nodes" in text and "days" in text
    assert "* swarm" in text and "o datacenter" in text
    assert "1000.0" in text and "100.0" in text  # ticks label the log axes in data units
    assert all(len(line) <= 70 for line in text.splitlines())


def test_a_linear_loss_curve_and_nothing_to_plot() -> None:
    curve = line_plot([1, 2, 3], {"loss": [6.2, 5.1, 4.7]}, title="Loss", xlabel="step", ylabel="nats",
                      log_x=False, log_y=False)
    assert "Loss" in curve and "* loss" in curve
    assert line_plot([1, 2], {"a": [None, None]}, title="Empty", xlabel="x", ylabel="y") == "Empty: nothing to plot"
