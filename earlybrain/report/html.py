"""Self-contained HTML assembly: inline CSS, images as base64 data URIs, no JS, no CDN.

Reports must open from a laptop, an e-mail attachment or an air-gapped cluster, so
nothing is fetched from the network. All text coming from data is escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

STATUS_CLASS = {
    "done": "ok",
    "pass": "ok",
    "ok": "ok",
    "failed": "bad",
    "fail": "bad",
    "skipped": "warn",
    "not yet available in this version": "na",
    "not applicable": "na",
}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}
h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;font-size:.9em;vertical-align:top}th{background:#f3f3f3}
.ok{background:#e3f4e3}.bad{background:#fbe0e0}.warn{background:#fff4d6}.na{background:#eeeeee;color:#555}
figure{margin:1em 0}figcaption{font-size:.85em;color:#444}img{max-width:100%;height:auto}
pre.fail{background:#fbe0e0;padding:.5em;white-space:pre-wrap;font-size:.8em}
.muted{color:#666;font-size:.85em}code{font-size:.9em}ul.err li{color:#a00000}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img_tag(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{esc(alt)}">'


def td(value: Any) -> str:
    """An escaped table cell."""
    return f"<td>{esc(value)}</td>"


def status_cell(status: str) -> str:
    """A cell coloured by status (done/failed/skipped/not yet available...)."""
    return f'<td class="{STATUS_CLASS.get(status, "")}">{esc(status)}</td>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table from a header and rows of ready-made ``<td>`` cells (see td/status_cell)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def figure(png: bytes, caption: str) -> str:
    return f"<figure>{img_tag(png, caption)}<figcaption>{esc(caption)}</figcaption></figure>"


def subject_page(
    *,
    title: str,
    summary: Sequence[tuple[str, str]],
    validation_status: str,
    errors: Sequence[str],
    notes: Sequence[str],
    image_rows: Sequence[Sequence[str]],
    stages: Sequence[dict[str, str]],
    sections: Sequence[tuple[str, Sequence[tuple[str, bytes]]]],
    version: str,
    cohort_link: str | None = "group/cohort.html",
    failures: Sequence[str] = (),
) -> str:
    """The subject report: summary, validation, stage table, then a figure section per stage.

    `sections` is [(heading, [(caption, png), ...]), ...] in data-flow order.
    """
    parts = [f"<h1>{esc(title)}</h1>"]
    parts.append(f'<p class="muted">earlybrain {esc(version)}')
    if cohort_link:
        parts.append(f' &middot; <a href="{esc(cohort_link)}">cohort overview</a>')
    parts.append("</p>")
    parts.append(table(["", ""], [[td(k), td(v)] for k, v in summary]))
    if failures:
        parts.append("<h2>Failed steps</h2>")
        parts.extend(f'<pre class="fail">{esc(f)}</pre>' for f in failures)

    parts.append("<h2>Input validation</h2>")
    parts.append(f"<table><tr><th>result</th>{status_cell(validation_status)}</tr></table>")
    if errors:
        parts.append('<ul class="err">' + "".join(f"<li>{esc(e)}</li>" for e in errors) + "</ul>")
    if notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    if image_rows:
        parts.append(
            table(
                ["image", "shape", "voxel size (mm)", "slices", "check"],
                [[*(td(c) for c in r[:-1]), status_cell(r[-1])] for r in image_rows],
            )
        )

    parts.append("<h2>Pipeline stages</h2>")
    parts.append(
        table(
            ["stage", "status", "details"],
            [[td(s["stage"]), status_cell(s["status"]), td(s.get("detail", ""))] for s in stages],
        )
    )

    for heading, figures in sections:
        parts.append(f"<h2>{esc(heading)}</h2>")
        if figures:
            parts.extend(figure(png, caption) for caption, png in figures)
        else:
            parts.append('<p class="muted">no images could be displayed</p>')
    return page(title, "\n".join(parts))


def cohort_page(
    *, title: str, header: Sequence[str], rows: Sequence[dict[str, Any]], version: str
) -> str:
    """Cohort table: one row per session, status coloured, link to its report."""
    body_rows = []
    for row in rows:
        cells = []
        for key in header:
            value = row.get(key, "")
            if key == "report" and value:
                cells.append(f'<td><a href="{esc(value)}">{esc(value)}</a></td>')
            elif key == "status":
                cells.append(status_cell(str(value)))
            else:
                cells.append(td(value))
        body_rows.append(cells)
    n_ok = sum(1 for r in rows if r.get("status") == "ok")
    parts = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="muted">earlybrain {esc(version)} &middot; {len(rows)} session(s), '
        f"{n_ok} processed, {len(rows) - n_ok} failed</p>",
        table(header, body_rows),
    ]
    return page(title, "\n".join(parts))
