"""Terminal plots for every command that draws one (plotext: labelled ticks, log axes, no GUI).

`line_plot` returns the plot as text, so callers print it through their own rich Console and tests
read it: the project command's sweep uses it, and so can a loss curve (`log_y=False`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotext as plt


def line_plot(xs: Sequence[float], series: Mapping[str, Sequence[float | None]], *, title: str, xlabel: str,
              ylabel: str, log_x: bool = True, log_y: bool = True, width: int = 78, height: int = 18) -> str:
    """One line per series against `xs`, each with its own marker (*, o, +, ...) so it reads without colour; points that are None (or not positive on a log axis) are left out.

    Returns plain text (no colour codes), or a one-line note when no series has a point to draw.
    """
    plt.clf()
    plt.plotsize(width, height)
    plt.theme("clear")
    drawn = False
    for marker, (name, ys) in zip("*o+x#@", series.items()):
        pts = [(x, y) for x, y in zip(xs, ys)
               if y is not None and (not log_x or x > 0) and (not log_y or y > 0)]
        if pts:
            plt.plot([x for x, _ in pts], [y for _, y in pts], label=f"{marker} {name}", marker=marker)
            drawn = True
    if not drawn:
        return f"{title}: nothing to plot"
    if log_x:
        plt.xscale("log")
    if log_y:
        plt.yscale("log")
    plt.title(title)
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)
    text = plt.build()
    plt.clf()
    return plt.uncolorize(text)
