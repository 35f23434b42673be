"""Self-contained HTML assembly: inline CSS, images as base64 data URIs, no CDN.

The only script is the cohort table's inline column sort (subject reports have none).

Reports must open from a laptop, an e-mail attachment or an air-gapped cluster, so
nothing is fetched from the network. All text coming from data is escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

STATUS_CLASS = {
    "done": "ok",
    "pass": "ok",
    "ok": "ok",
    "failed": "bad",
    "fail": "bad",
    "skipped": "warn",
    "flagged": "warn",
    "not yet available in this version": "na",
    "not applicable": "na",
    "kept": "ok",  # stack QC keeps a stack, or excludes it
    "excluded": "bad",
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
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
.charts{display:flex;flex-wrap:wrap;gap:.4em}svg.chart{font-size:10px}
svg.chart a:hover circle{stroke:#000;stroke-width:2}
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


def table(
    header: Sequence[str], rows: Iterable[Sequence[str]], row_classes: Sequence[str] = ()
) -> str:
    """A table from a header and rows of ready-made ``<td>`` cells (see td/status_cell);
    `row_classes` (one per row, "" for none) colour whole rows, e.g. "warn" for flagged."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    classes = [f' class="{esc(c)}"' if c else "" for c in row_classes]
    body = "".join(
        f"<tr{classes[i] if i < len(classes) else ''}>{''.join(row)}</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


class Section(NamedTuple):
    """A report section: its figures [(caption, png), ...], then ready-made (escaped) HTML."""

    heading: str
    figures: Sequence[tuple[str, bytes]]
    html: str = ""


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
    sections: Sequence[Section | tuple[str, Sequence[tuple[str, bytes]]]],
    version: str,
    cohort_link: str | None = "group/cohort.html",
    failures: Sequence[str] = (),
    appendix: Sequence[str] = (),
    details: Sequence[str] = (),
) -> str:
    """The subject report: summary, validation, stage table, then a figure section per stage.

    `sections` are Sections (or (heading, figures) pairs) in data-flow order; `details`
    (after the stage table) and `appendix` (closing the page, e.g. the Methods) hold
    ready-made (escaped) HTML fragments.
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
    parts.extend(details)

    for heading, figures, extra in (Section(*s) for s in sections):
        parts.append(f"<h2>{esc(heading)}</h2>")
        if figures:
            parts.extend(figure(png, caption) for caption, png in figures)
        else:
            parts.append('<p class="muted">no images could be displayed</p>')
        if extra:
            parts.append(extra)
    parts.extend(appendix)
    return page(title, "\n".join(parts))


# Click (or Enter/Space on) a header of a table.sortable to sort by that column, again to
# reverse. Numbers compare as numbers, text case-insensitively; empty and "n/a" cells stay
# last in both directions; ties keep their previous order.
SORT_JS = """
(function () {
  var NUM = /^[-+]?(\\d+\\.?\\d*|\\.\\d+)([eE][-+]?\\d+)?$/;
  function key(cell) {
    var t = cell ? cell.textContent.trim() : "";
    if (t === "" || t.toLowerCase() === "n/a") return null;
    return NUM.test(t) ? parseFloat(t) : t.toLowerCase();
  }
  function compare(a, b) {
    var na = typeof a === "number", nb = typeof b === "number";
    if (na && nb) return a - b;
    if (na !== nb) return na ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  function sortBy(table, heads, th, col) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
    for (var h = 0; h < heads.length; h++) heads[h].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = [];
    for (var i = 0; i < body.rows.length; i++) {
      rows.push({ row: body.rows[i], key: key(body.rows[i].cells[col]), index: i });
    }
    rows.sort(function (x, y) {
      if (x.key === null || y.key === null) {
        if (x.key === y.key) return x.index - y.index;
        return x.key === null ? 1 : -1;
      }
      var c = compare(x.key, y.key);
      return (asc ? c : -c) || x.index - y.index;
    });
    for (var j = 0; j < rows.length; j++) body.appendChild(rows[j].row);
  }
  var tables = document.querySelectorAll("table.sortable");
  for (var t = 0; t < tables.length; t++) {
    (function (table) {
      if (!table.tHead || !table.tBodies.length) return;
      var heads = table.tHead.rows[0].cells;
      for (var c = 0; c < heads.length; c++) {
        (function (th, col) {
          th.tabIndex = 0;
          th.title = "sort by this column";
          th.addEventListener("click", function () { sortBy(table, heads, th, col); });
          th.addEventListener("keydown", function (e) {
            if (e.key === "Enter" || e.key === " ") {
              e.preventDefault();
              sortBy(table, heads, th, col);
            }
          });
        })(heads[c], c);
      }
    })(tables[t]);
  }
})();
"""


def _count_line(rows: Sequence[dict[str, Any]]) -> str:
    """One line of counts, e.g. '3 session(s): 2 fetal, 1 infant; 2 ok, 1 failed'."""
    kinds: dict[str, int] = {"fetal": 0, "infant": 0}
    for r in rows:
        kind = str(r.get("kind") or "n/a")
        kind = "unknown kind" if kind == "n/a" else kind
        kinds[kind] = kinds.get(kind, 0) + 1
    kinds = {k: n for k, n in kinds.items() if n or k in ("fetal", "infant")}
    n_ok = sum(1 for r in rows if r.get("status") == "ok")
    by_kind = ", ".join(f"{n} {k}" for k, n in kinds.items())
    return f"{len(rows)} session(s): {by_kind}; {n_ok} ok, {len(rows) - n_ok} failed"


def _failed_row(row: dict[str, Any]) -> list[str]:
    """Cells of the failed-sessions table: who, which stage, why, and the report link."""
    session = row.get("session_id", "n/a")
    who = row.get("participant_id", "") + (f" {session}" if session != "n/a" else "")
    report = row.get("report", "n/a")
    link = (
        f'<td><a href="{esc(report)}">{esc(report)}</a></td>'
        if report and report != "n/a"
        else td("no report")
    )
    return [td(who), td(row.get("failed_stage", "n/a")), td(row.get("reason", "n/a")), link]


def cohort_page(
    *,
    title: str,
    header: Sequence[str],
    rows: Sequence[dict[str, Any]],
    version: str,
    tsv_link: str | None = None,
    sections: Sequence[str] = (),
) -> str:
    """Cohort table (sortable by column), a line of counts, and the failed sessions.

    One row per session, status coloured, link to its report; each failed session is
    listed again below with its failed stage and reason, so nothing has to be scrolled for.
    `sections` (ready-made HTML, e.g. growth charts) go between the table and the failed.
    """
    body_rows = []
    for row in rows:
        cells = []
        for key in header:
            value = row.get(key, "")
            if key == "report" and value and value != "n/a":
                cells.append(f'<td><a href="{esc(value)}">{esc(value)}</a></td>')
            elif key == "status":
                cells.append(status_cell(str(value)))
            else:
                cells.append(td(value))
        body_rows.append(cells)
    failed = [r for r in rows if r.get("status") != "ok"]
    parts = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="muted">earlybrain {esc(version)}</p>',
        f'<p id="counts">{esc(_count_line(rows))}</p>',
        table(header, body_rows).replace("<table>", '<table class="sortable">', 1),
        '<p class="muted">Click a column header to sort by it (again to reverse).'
        + (f' The table as TSV: <a href="{esc(tsv_link)}">{esc(tsv_link)}</a>.' if tsv_link else "")
        + "</p>",
        *sections,
        '<h2 id="failed">Failed sessions</h2>',
    ]
    if failed:
        parts.append(
            table(["session", "failed stage", "reason", "report"], map(_failed_row, failed))
        )
    else:
        parts.append("<p>None: every session ran through.</p>")
    parts.append(f"<script>{SORT_JS}</script>")
    return page(title, "\n".join(parts))
