"""Terminal plots for every command that draws one (plotext: labelled ticks, log axes, no GUI).

`line_plot` returns the plot as text, so callers print it through their own rich Console and tests
read it: the project command's sweep uses it, and so can a loss curve (`log_y=False`).

plotext's own ticks split the axis evenly, which on a log axis lands on values like 8225.2 and
1268.3. Here ticks sit on round values instead, picked and labelled separately, as matplotlib's
Locator and Formatter split the job: decades or 1-2-5 steps on a log axis, multiples of 1, 2 or
5 x 10^k on a linear one, and round durations (1 h, 1 d, 10 d, 1 yr) for time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import plotext as plt

from bench.units import TIME_UNITS, count

#: Picks tick values for an axis: (lowest, highest, log axis?, most ticks) -> values inside the range.
TickPicker = Callable[[float, float, bool, int], list[float]]
#: Labels one tick value: bench.units' count, usd, duration_label...
Formatter = Callable[[float], str]


def _decimal(mantissa: float, exponent: int) -> float:
    """mantissa x 10^exponent as the float nearest the decimal (2 x 10^-1 is 0.2, not 0.2000000000000004)."""
    return float(f"{mantissa}e{exponent}")


def _powers(lo: float, hi: float, mantissas: Sequence[int]) -> list[float]:
    """Every m x 10^k (m in `mantissas`) inside [lo, hi], ascending; lo > 0."""
    found = []
    for exponent in range(math.floor(math.log10(lo)), math.floor(math.log10(hi)) + 1):
        for m in mantissas:
            value = _decimal(m, exponent)
            if lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9):
                found.append(value)
    return found


def _thin(ticks: list[float], most: int) -> list[float]:
    """Every k-th tick, k the smallest step that leaves at most `most`."""
    step = math.ceil(len(ticks) / most)
    return ticks[::step]


def _densest(ladders: Sequence[list[float]], most: int) -> list[float]:
    """The first ladder (densest first) with two to `most` ticks; when every ladder with two or more has
    too many, the coarsest of them thinned; [] when none has two (a range narrower than one step)."""
    for ticks in ladders:
        if 2 <= len(ticks) <= most:
            return ticks
    crowded = [ticks for ticks in ladders if len(ticks) > most]
    return _thin(crowded[-1], most) if crowded else []


def linear_ticks(lo: float, hi: float, most: int) -> list[float]:
    """Multiples of the smallest step of 1, 2 or 5 x 10^k that puts at most `most` ticks in [lo, hi]."""
    if hi <= lo:
        return [lo]
    exponent = math.floor(math.log10((hi - lo) / most))
    while True:
        for m in (1, 2, 5):
            step = _decimal(m, exponent)
            first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
            if last - first + 1 <= most:
                return [_decimal(i * m, exponent) for i in range(first, last + 1)]
        exponent += 1


def round_ticks(lo: float, hi: float, log: bool, most: int) -> list[float]:
    """Round values in [lo, hi]: on a log axis 1-2-5 steps where they fit, else decades (every other
    one when there are too many); on a linear axis, or a log one narrower than a 1-2-5 step, even steps."""
    if log:
        return _densest([_powers(lo, hi, (1, 2, 5)), _powers(lo, hi, (1,))], most) or linear_ticks(lo, hi, most)
    return linear_ticks(lo, hi, most)


def duration_ticks(lo: float, hi: float, log: bool, most: int) -> list[float]:
    """Round durations in [lo, hi] seconds, round in the unit `bench.units.duration_label` shows them in:
    on a log axis 1 and 10 of each unit (10 h, 1 d, 10 d, 100 d, 1 yr), or 1-2-5 steps of it where they fit;
    on a linear axis even steps of the largest unit the range reaches."""
    units = [scale for scale, _ in TIME_UNITS]
    if not log:
        scale = next((s for s in units if max(abs(lo), abs(hi)) >= s), units[-1])
        return [t * scale for t in linear_ticks(lo / scale, hi / scale, most)]

    def ladder(mantissas: Sequence[int]) -> list[float]:
        found = []
        for scale, bigger in zip(units[::-1], [*units[::-1][1:], math.inf]):
            top = min(hi, bigger * (1 - 1e-9))  # 1000 ms is shown as 1 s, so it is the seconds' tick
            if top >= max(lo, scale * (1 - 1e-9)):
                found += [v * scale for v in _powers(max(lo, scale) / scale, top / scale, mantissas)]
        return found

    return _densest([ladder((1, 2, 5)), ladder((1,))], most) or duration_ticks(lo, hi, False, most)


def _apart(ticks: list[float], lo: float, hi: float, log: bool, cells: int) -> list[float]:
    """The ticks left when two would land in one cell (row or column) as plotext places them: the larger
    stays, which on the duration ladder is the whole unit (1 d over 10 h, 1 yr over 100 d)."""
    if hi <= lo:
        return ticks
    scale = math.log10 if log else float
    kept: dict[int, float] = {}
    for tick in sorted(ticks, reverse=True):
        kept.setdefault(math.floor(0.5 + (cells - 1) * (scale(tick) - scale(lo)) / (scale(hi) - scale(lo))), tick)
    return sorted(kept.values())


def line_plot(xs: Sequence[float], series: Mapping[str, Sequence[float | None]], *, title: str, xlabel: str,
              ylabel: str, log_x: bool = True, log_y: bool = True, width: int = 78, height: int = 18,
              x_ticks: TickPicker = round_ticks, y_ticks: TickPicker = round_ticks,
              x_format: Formatter = count, y_format: Formatter = count) -> str:
    """One line per series against `xs`, each with its own marker (*, o, +, ...) so it reads without
    colour; points that are None (or not positive on a log axis) are left out.

    Ticks come from `x_ticks`/`y_ticks` (round values by default; `duration_ticks` for seconds) and are
    labelled by `x_format`/`y_format` (bench.units.count by default; usd, duration_label...).
    Returns plain text (no colour codes), or a one-line note when no series has a point to draw.
    """
    plt.clf()
    plt.plotsize(width, height)
    plt.theme("clear")
    drawn: list[tuple[float, float]] = []
    legend: list[str] = []  # below the plot: plotext's own legend sits on the canvas, over the top points
    for marker, (name, ys) in zip("*o+x#@", series.items()):
        pts = [(x, y) for x, y in zip(xs, ys)
               if y is not None and (not log_x or x > 0) and (not log_y or y > 0)]
        if pts:
            plt.plot([x for x, _ in pts], [y for _, y in pts], marker=marker)
            drawn += pts
            legend.append(f"{marker} {name}")
    if not drawn:
        return f"{title}: nothing to plot"
    if log_x:
        plt.xscale("log")
    if log_y:
        plt.yscale("log")
    # The canvas is the plot less the title, frame, x tick labels and axis labels (a row each, a column
    # each side); a tick label takes a row, so leave one between them, and about 8 columns along x.
    rows = height - 5
    x_lo, x_hi = min(x for x, _ in drawn), max(x for x, _ in drawn)
    y_lo, y_hi = min(y for _, y in drawn), max(y for _, y in drawn)
    y_values = _apart(y_ticks(y_lo, y_hi, log_y, max(2, rows // 2)), y_lo, y_hi, log_y, rows)
    y_labels = [y_format(v) for v in y_values]
    columns = width - 2 - max(map(len, y_labels))
    x_values = _apart(x_ticks(x_lo, x_hi, log_x, max(2, width // 10)), x_lo, x_hi, log_x, columns)
    plt.xticks(x_values, [x_format(v) for v in x_values])
    plt.yticks(y_values, y_labels)
    plt.title(title)
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)
    text = plt.uncolorize(plt.build())
    plt.clf()
    return f"{text.rstrip()}\n{'   '.join(legend).center(width).rstrip()}"
