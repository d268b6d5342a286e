"""The leaderboard page at `/`: plain HTML and an inline SVG chart, rendered here, no JavaScript.

Sorting is a link per column header (the server sorts); every string from a submission is escaped.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from bench.api_models import Leaderboard, LeaderboardRow
from bench.hardware import DTYPES
from bench.units import si
from probes.measurement import METRICS

#: Column key -> (header, sorts by). Numbers sort with missing values last whatever the order.
COLUMNS: dict[str, str] = {
    "device_model": "Device",
    "variant": "Variant",
    "count": "Runs",
    "median": "Median",
    "p10": "p10",
    "p90": "p90",
    "per_watt": "Per watt",
    "per_dollar": "Per dollar",
}
VARIANTS = ("", "sustained", "burst", "pinned", "pageable", "idle", "loaded")
PERF_COLOUR = "#2563eb"
WATT_COLOUR = "#16a34a"
_EFFICIENCY_UNITS = {"FLOP/s": "FLOP/J", "B/s": "B/J", "bit/s": "bit/J", "tokens/s": "tokens/J"}

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 24px; color: #111; background: #fff; }
h1 { font-size: 22px; margin: 0 0 12px; }
form { margin: 0 0 12px; }
table { border-collapse: collapse; margin-top: 16px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
th a { color: inherit; }
th.sorted { background: #eef2ff; }
.ref { font-size: 11px; color: #555; margin-left: 4px; }
svg text { font: 12px system-ui, sans-serif; fill: #111; }
.empty { color: #555; }
"""


def render(board: Leaderboard, *, sort: str = "median", order: str = "desc") -> str:
    sort = sort if sort in COLUMNS else "median"
    descending = order != "asc"
    rows = sort_rows(board.rows, sort, descending)
    title = f"{board.metric} {board.dtype}".strip() + (f" ({board.variant})" if board.variant else "")
    runs = sum(r.count for r in rows)
    body = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>flopwatt leaderboard: {escape(title)}</title><style>{_STYLE}</style></head><body>",
        "<h1>flopwatt leaderboard</h1>",
        _form(board),
        f'<p id="summary">{escape(title)}: {runs} runs over {len(rows)} device models '
        f"({escape(board.unit)}). Flagged and hidden runs are left out.</p>",
    ]
    if rows:
        body += [_chart(rows, board.unit), _table(rows, board, sort, descending)]
    else:
        body.append('<p class="empty">No runs for this metric and dtype yet.</p>')
    body.append(
        '<p>Export everything: <a href="/api/v1/export?format=csv">CSV</a> · '
        '<a href="/api/v1/export?format=jsonl">JSON lines</a> · API: <a href="/docs">/docs</a></p></body></html>'
    )
    return "\n".join(body)


def sort_rows(rows: list[LeaderboardRow], key: str, descending: bool) -> list[LeaderboardRow]:
    present = [r for r in rows if getattr(r, key) is not None]
    missing = [r for r in rows if getattr(r, key) is None]
    present.sort(key=lambda r: getattr(r, key), reverse=descending)
    return present + missing


def _form(board: Leaderboard) -> str:
    def select(name: str, options: list[tuple[str, str]], chosen: str) -> str:
        items = "".join(
            f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(label)}</option>'
            for v, label in options
        )
        return f'<label>{name} <select name="{name}">{items}</select></label> '

    return (
        '<form method="get" action="/">'
        + select("metric", [(m, m) for m in METRICS], board.metric)
        + select("dtype", [("", "(none)")] + [(d, d) for d in DTYPES], board.dtype)
        + select("variant", [(v, v or "(all)") for v in VARIANTS], board.variant or "")
        + '<button type="submit">Show</button></form>'
    )


def _table(rows: list[LeaderboardRow], board: Leaderboard, sort: str, descending: bool) -> str:
    per_watt_unit = _EFFICIENCY_UNITS.get(board.unit, "")
    headers = []
    for key, label in COLUMNS.items():
        flip = "asc" if key == sort and descending else "desc"
        query = urlencode(
            {"metric": board.metric, "dtype": board.dtype, "variant": board.variant or "", "sort": key, "order": flip}
        )
        mark = (" ▼" if descending else " ▲") if key == sort else ""
        css = ' class="sorted"' if key == sort else ""
        headers.append(f'<th{css}><a href="/?{escape(query)}">{label}{mark}</a></th>')
    lines = [f'<table id="leaderboard"><thead><tr>{"".join(headers)}</tr></thead><tbody>']
    for r in rows:
        ref = '<span class="ref">datasheet card</span>' if r.reference else ""
        cells = [
            f"{escape(r.device_model)}{ref}",
            escape(r.variant),
            str(r.count),
            si(r.median, board.unit),
            si(r.p10, board.unit),
            si(r.p90, board.unit),
            _per_watt_cell(r, per_watt_unit),
            f"{si(r.per_dollar, board.unit)} per $" if r.per_dollar is not None else "–",
        ]
        lines.append(
            f'<tr data-device="{escape(r.device_model)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _per_watt_cell(r: LeaderboardRow, unit: str) -> str:
    """The figure, and over how many of the runs when some measured no energy."""
    if r.per_watt is None:
        return "–"
    partial = f" ({r.per_watt_count} of {r.count} runs)" if r.per_watt_count < r.count else ""
    return si(r.per_watt, unit) + partial


def _chart(rows: list[LeaderboardRow], unit: str) -> str:
    """Two bar panels side by side: the median (p10–p90 whisker) and the median per watt."""
    label_w, panel_w, gap, row_h, top = 230, 330, 40, 26, 28
    width = label_w + 2 * panel_w + gap + 20
    height = top + row_h * len(rows) + 10
    top_perf = max(r.p90 for r in rows) or 1.0
    top_watt = max((r.per_watt for r in rows if r.per_watt is not None), default=0.0) or 1.0
    x_perf, x_watt = label_w, label_w + panel_w + gap
    watt_unit = _EFFICIENCY_UNITS.get(unit, "per W")
    parts = [
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="Median performance and performance per watt per device">',
        f'<text x="{x_perf}" y="16" font-weight="bold">Median {escape(unit)} (line: p10–p90)</text>',
        f'<text x="{x_watt}" y="16" font-weight="bold">Median {escape(watt_unit)}</text>',
    ]
    bar_space = panel_w - 90  # room for the value label after the bar
    for i, r in enumerate(rows):
        y = top + i * row_h
        name = r.device_model + (f" ({r.variant})" if r.variant else "")
        name = name if len(name) <= 34 else name[:33] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(name)}</text>')
        w = bar_space * r.median / top_perf
        parts.append(
            f'<rect class="perf" x="{x_perf}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{PERF_COLOUR}"/>'
        )
        lo, hi = x_perf + bar_space * r.p10 / top_perf, x_perf + bar_space * r.p90 / top_perf
        parts.append(f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{y + 11}" y2="{y + 11}" stroke="#111" stroke-width="2"/>')
        parts.append(f'<text x="{max(x_perf + w, hi) + 6:.1f}" y="{y + 15}">{escape(si(r.median, unit))}</text>')
        if r.per_watt is None:
            parts.append(f'<text x="{x_watt}" y="{y + 15}" fill="#555">no energy figure</text>')
            continue
        w = bar_space * r.per_watt / top_watt
        parts.append(
            f'<rect class="per-watt" x="{x_watt}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{WATT_COLOUR}"/>'
        )
        parts.append(f'<text x="{x_watt + w + 6:.1f}" y="{y + 15}">{escape(si(r.per_watt, watt_unit))}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
