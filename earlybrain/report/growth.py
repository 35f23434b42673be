"""Growth charts: volumes on the normative centile curves, and brain age vs age.

Two renderings of the same charts. PNG (matplotlib, Agg) for one session: the subject
report embeds it and the `brainage_figures` rule writes it as a file of its own. Inline
SVG for the cohort report, where every session is a point that links to its report: an
image map over a PNG would drift as soon as the page is zoomed or the figure scaled.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from earlybrain.anatomy.biometry import TERM_WEEKS, WEEKS_PER_MONTH
from earlybrain.anatomy.labels import STRUCTURE_NAMES
from earlybrain.brainage.norms import Norms
from earlybrain.report.figures import to_png
from earlybrain.report.html import esc
from earlybrain.report.readers import read_json, read_tsv

PathLike = str | os.PathLike[str]
CENTILES = (3, 10, 50, 90, 97)
CURVE_POINTS = 60
# the estimates beside the primary one: (JSON key, legend label, marker); an infant's
# brain age has a myelination estimate too
CHECK_METHODS = (
    ("atlas_similarity", "atlas similarity", "s"),
    ("volumes", "volumes", "^"),
    ("myelination", "myelination", "D"),
)
PRIMARY_LABELS = {"deep_ensemble": "deep ensemble", "combined": "combined"}
OUTER_BAND, INNER_BAND, MEDIAN = "#dbe7f3", "#a9c7e4", "#1f5f9f"
POINT, FLAGGED = "#222222", "#d62728"


def number(value: Any) -> float | None:
    """A finite number from a JSON or TSV value ("n/a", "", None, inf -> None)."""
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def fmt(value: Any, spec: str = ".1f") -> str:
    """A number formatted for reading ("n/a" when there is none; never "-0.00")."""
    x = number(value)
    if x is None:
        return "n/a"
    text = format(x, spec)
    return format(0.0, spec) if float(text) == 0 else text


def is_flagged(row: dict[str, str]) -> bool:
    """Whether a z-score TSV row is flagged (its `flag` column says true)."""
    return str(row.get("flag", "")).strip().lower() == "true"


def centile_curves(norms: Norms, structure: str) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Ages over the structure's fitted range (no extrapolation) and the centile volumes."""
    lo, hi = norms.model(structure).age_range
    ages = np.linspace(lo, hi, CURVE_POINTS)
    return ages, norms.centile_curves(structure, ages, CENTILES)


def short_name(structure: str) -> str:
    """A structure's name as a chart title."""
    return STRUCTURE_NAMES.get(structure, structure).removesuffix(" (tissue without CSF)")


def age_label(kind: str | None) -> str:
    return f"age (weeks {kind})" if kind else "age (weeks)"


def months_axis(ax: Axes, kind: str | None) -> None:
    """For post-menstrual ages: a second x axis on top in months after term."""
    if kind != "PMA":
        return
    top = ax.secondary_xaxis(
        "top",
        functions=(
            lambda w: (np.asarray(w) - TERM_WEEKS) / WEEKS_PER_MONTH,
            lambda m: TERM_WEEKS + np.asarray(m) * WEEKS_PER_MONTH,
        ),
    )
    top.set_xlabel("months after term", fontsize=6)
    top.tick_params(labelsize=6)


# --- one session, PNG ------------------------------------------------------------------


def _centile_panel(
    ax: Axes, norms: Norms, structure: str, age: float | None, row: dict[str, str]
) -> None:
    ages, curves = centile_curves(norms, structure)
    ax.fill_between(ages, curves[3], curves[97], color=OUTER_BAND, lw=0, label="3rd-97th")
    ax.fill_between(ages, curves[10], curves[90], color=INNER_BAND, lw=0, label="10th-90th")
    ax.plot(ages, curves[50], color=MEDIAN, lw=1.2, label="50th centile")
    volume, z, flagged = number(row.get("volume_ml")), number(row.get("z")), is_flagged(row)
    colour = FLAGGED if flagged else POINT
    if volume is not None and age is not None:
        ax.plot([age], [volume], "o", ms=6, color=colour, mec="white", mew=0.8, zorder=3)
        ax.set_xlim(min(ages[0], age) - 0.5, max(ages[-1], age) + 0.5)
    name = short_name(structure)
    ax.set_title(
        name + (f"  z {fmt(z, '+.2f')}" if z is not None else ""), fontsize=8, color=colour
    )
    ax.set_ylabel("mL", fontsize=7)
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=7)


def _age_panel(ax: Axes, result: dict[str, Any]) -> None:
    """Brain age against chronological age: identity, healthy gap band, the estimates."""
    chrono = number(result.get("chronological_age_weeks"))
    pred = number(result.get("predicted_age_weeks"))
    lo95, hi95 = ([*map(number, result.get("interval_95_weeks") or []), None, None])[:2]
    methods = result.get("methods") or {}
    others = [
        (number(methods[k].get("age_weeks")), lab, mk)
        for k, lab, mk in CHECK_METHODS
        if isinstance(methods.get(k), dict)
    ]
    values = [v for v in (chrono, pred, lo95, hi95, *(o[0] for o in others)) if v is not None]
    kind = result.get("age_kind")
    ax.set_title("brain age vs chronological age", fontsize=8)
    ax.set_xlabel(age_label(kind), fontsize=7)
    ax.set_ylabel("brain age (weeks)", fontsize=7)
    ax.tick_params(labelsize=7)
    if chrono is None or pred is None:
        ax.text(0.5, 0.5, "no brain age", ha="center", va="center", transform=ax.transAxes)
        return
    line = np.array([math.floor(min(values)) - 1.0, math.ceil(max(values)) + 1.0])
    gap_sd = number(result.get("gap_sd_weeks"))
    # healthy gaps ~ N(bias, sd) at this age (an infant's combination has an age-dependent
    # bias; the fetal ensemble none)
    bias = number(result.get("gap_bias_weeks")) or 0.0
    if gap_sd:
        band = f"healthy gap ±2 SD ({2 * gap_sd:.1f} w)"
        ax.fill_between(
            line, line + bias - 2 * gap_sd, line + bias + 2 * gap_sd, color=OUTER_BAND, label=band
        )
    ax.plot(line, line, "--", color="#555555", lw=0.8, label="brain age = age")
    err = [[pred - lo95], [hi95 - pred]] if lo95 is not None and hi95 is not None else None
    primary = result.get("primary_method") or "deep_ensemble"
    label = f"{PRIMARY_LABELS.get(primary, primary)}, 95 % interval"
    ax.errorbar([chrono], [pred], yerr=err, fmt="o", color=MEDIAN, capsize=3, label=label)
    # the checks a little left and right of the age, so they do not hide each other
    step = max(0.35, 0.015 * float(line[1] - line[0]))
    offsets = (-step, step, 2 * step)
    for offset, (age, name, marker) in zip(offsets, others, strict=False):
        if age is not None:
            ax.plot([chrono + offset], [age], marker, color="#e08020", ms=5, label=name)
    ax.set_xlim(*line)
    ax.set_ylim(*line)
    months_axis(ax, kind)
    if primary == "deep_ensemble":
        ax.legend(fontsize=6, loc="upper left", frameon=False)
    else:  # an infant's estimates spread wider: the legend goes to the side without them
        left = (chrono - line[0]) / (line[1] - line[0]) > 0.5
        ax.legend(
            fontsize=5, loc="upper left" if left else "lower right", frameon=False,
            handlelength=1.2, borderaxespad=0.2,
        )  # fmt: skip


def normative_chart(brainage_json: PathLike, zscores_tsv: PathLike, norms: Norms) -> bytes:
    """One panel per structure with norms (centile curves, the session at its age, red
    when flagged), then brain age vs chronological age (the brain-age step's outputs)."""
    brainage = read_json(brainage_json)
    age = number(brainage.get("chronological_age_weeks"))
    rows = [r for r in read_tsv(zscores_tsv) if r.get("structure") in norms.structures]
    ncol = 5
    nrow = math.ceil((len(rows) + 1) / ncol)
    fig = Figure(figsize=(2.6 * ncol, 2.4 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, row in zip(axes, rows, strict=False):
        _centile_panel(ax, norms, row["structure"], age, row)
        ax.set_xlabel(age_label(norms.age_kind), fontsize=7)
        months_axis(ax, norms.age_kind)
    _age_panel(axes[len(rows)], brainage)
    for ax in axes[len(rows) + 1 :]:
        ax.set_visible(False)
    if rows:
        axes[0].legend(fontsize=6, loc="upper left", frameon=False)
    fig.tight_layout()
    return to_png(fig, dpi=80)


# --- the cohort, inline SVG --------------------------------------------------------------


class Point(NamedTuple):
    """A session on a cohort chart: where, its report, its tooltip, and its y interval."""

    x: float
    y: float
    href: str | None  # None: the session has no report to link to
    label: str
    flagged: bool = False
    interval: tuple[float, float] | None = None


class _Frame(NamedTuple):
    """Data limits and the SVG size; maps data to pixels (y up)."""

    xlim: tuple[float, float]
    ylim: tuple[float, float]
    width: int = 320
    height: int = 230
    left: int = 46
    right: int = 10
    top: int = 20
    bottom: int = 34

    def x(self, v: float) -> float:
        lo, hi = self.xlim
        return self.left + (v - lo) / (hi - lo) * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        lo, hi = self.ylim
        return (
            self.height
            - self.bottom
            - (v - lo) / (hi - lo) * (self.height - self.top - self.bottom)
        )

    def path(self, xs: Sequence[float], ys: Sequence[float]) -> str:
        return " ".join(
            f"{'M' if i == 0 else 'L'}{self.x(a):.1f},{self.y(b):.1f}"
            for i, (a, b) in enumerate(zip(xs, ys, strict=True))
        )

    def band(self, xs: Sequence[float], lo: Sequence[float], hi: Sequence[float], fill: str) -> str:
        d = self.path([*xs, *xs[::-1]], [*hi, *lo[::-1]])
        return f'<path d="{d}Z" fill="{fill}" stroke="none"/>'


def _svg(frame: _Frame, body: str, title: str, xlabel: str, ylabel: str) -> str:
    """Axes with ticks (matplotlib's tick choice), labels and title around `body`."""
    f, parts = frame, []
    x0, x1 = f.left, f.width - f.right
    y0, y1 = f.height - f.bottom, f.top
    for v in MaxNLocator(5).tick_values(*f.xlim):
        if f.xlim[0] <= v <= f.xlim[1]:
            x = f.x(v)
            parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" stroke="#444"/>')
            parts.append(f'<text x="{x:.1f}" y="{y0 + 14}" text-anchor="middle">{v:g}</text>')
    for v in MaxNLocator(5).tick_values(*f.ylim):
        if f.ylim[0] <= v <= f.ylim[1]:
            y = f.y(v)
            parts.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0}" y2="{y:.1f}" stroke="#444"/>')
            parts.append(f'<text x="{x0 - 6}" y="{y + 3:.1f}" text-anchor="end">{v:g}</text>')
    axes = (
        f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" '
        'stroke="#444"/>'
        f'<text x="{(x0 + x1) / 2:.0f}" y="{f.height - 4}" text-anchor="middle">'
        f"{esc(xlabel)}</text>"
        f'<text transform="translate(11,{(y0 + y1) / 2:.0f}) rotate(-90)" text-anchor="middle">'
        f"{esc(ylabel)}</text>"
        f'<text x="{(x0 + x1) / 2:.0f}" y="13" text-anchor="middle" font-weight="bold">'
        f"{esc(title)}</text>"
    )
    # the plot area is an inner <svg>, which clips bands and lines at the axes
    w, h = x1 - x0, y0 - y1
    inner = f'<svg x="{x0}" y="{y1}" width="{w}" height="{h}" viewBox="{x0} {y1} {w} {h}">'
    return (
        f'<svg class="chart" width="{f.width}" '
        f'height="{f.height}" viewBox="0 0 {f.width} {f.height}" role="img" '
        f'aria-label="{esc(title)}">{inner}{body}</svg>{"".join(parts)}{axes}</svg>'
    )


def _points(frame: _Frame, points: Sequence[Point]) -> str:
    """Each point a link to its session's report, its label as a tooltip."""
    out = []
    for p in points:
        colour = FLAGGED if p.flagged else POINT
        bar = ""
        if p.interval is not None:
            a, b = (frame.y(v) for v in p.interval)
            bar = f'<line x1="{frame.x(p.x):.1f}" y1="{a:.1f}" x2="{frame.x(p.x):.1f}" '
            bar += f'y2="{b:.1f}" stroke="{colour}" stroke-opacity="0.5"/>'
        dot = (
            f'{bar}<circle cx="{frame.x(p.x):.1f}" cy="{frame.y(p.y):.1f}" r="4" '
            f'fill="{colour}" stroke="white"><title>{esc(p.label)}</title></circle>'
        )
        out.append(f'<a href="{esc(p.href)}">{dot}</a>' if p.href else dot)
    return "".join(out)


def growth_chart_svg(norms: Norms, structure: str, points: Sequence[Point]) -> str:
    """Centile bands (3-97, 10-90) and median of one structure; the sessions as links."""
    ages, curves = centile_curves(norms, structure)
    xs = [*ages, *(p.x for p in points)]
    top = max([*curves[97], *(p.y for p in points)]) * 1.05
    frame = _Frame((min(xs) - 0.5, max(xs) + 0.5), (0.0, top))
    body = (
        frame.band(ages, curves[3], curves[97], OUTER_BAND)
        + frame.band(ages, curves[10], curves[90], INNER_BAND)
        + f'<path d="{frame.path(ages, curves[50])}" fill="none" stroke="{MEDIAN}" '
        'stroke-width="1.5"/>' + _points(frame, points)
    )
    return _svg(frame, body, short_name(structure), age_label(norms.age_kind), "volume (mL)")


def age_scatter_svg(
    points: Sequence[Point],
    gap_sd: float | None,
    kind: str | None,
    title: str = "brain age vs age",
) -> str:
    """Brain age (y, with its 95 % interval) vs chronological age (x): identity line,
    the band of healthy gaps (±2 SD) when known; the sessions as links."""
    values = [*(p.x for p in points), *(v for p in points for v in (p.interval or (p.y,)))]
    lim = (math.floor(min(values)) - 1.0, math.ceil(max(values)) + 1.0)
    frame = _Frame(lim, lim)
    line = list(lim)
    body = ""
    if gap_sd:
        lo, hi = [v - 2 * gap_sd for v in line], [v + 2 * gap_sd for v in line]
        body += frame.band(line, lo, hi, OUTER_BAND)
    body += f'<path d="{frame.path(line, line)}" stroke="#555" stroke-dasharray="4 3"/>'
    return _svg(
        frame,
        body + _points(frame, points),
        title,
        age_label(kind),
        "brain age (weeks)",
    )
