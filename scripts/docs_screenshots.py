"""Screenshots of the HTML reports for the documentation (docs/images/*.png).

Opens the reports of a demo run (`bash scripts/demo.sh`) in headless Chromium, as
tests/test_report_browser.py does (Debian's browser driven by Playwright, offline, no
browser download), and saves one PNG per report part: of the first fetal subject, the
stage table, stack QC, brain masks and each stage's section; of the first infant, the
stage table and brain age; of the cohort, the table, the outliers with the brain-age
chart, and the growth charts. `--real-report` adds the parts of one subject
report made on real data (file names `real-subject-*.png`).

    .venv/bin/python scripts/docs_screenshots.py [--results DIR] [--real-report HTML]
        [--out docs/images]

A report part is found by its heading's text (the reports have no section ids apart
from the cohort's): from the heading to the element before the next heading that ends
it. A part the report does not have (a stage that did not run) is skipped with a note.
A PNG heavier than `MAX_BYTES` is reduced to 256 colours with Pillow (unless that
changes a colour noticeably), then narrowed until it fits.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1200, "height": 900}
MAX_WIDTH = 1600  # px of a saved PNG (the cohort table is wider than the page)
MAX_BYTES = 200_000  # a PNG above this is reduced to a palette, then narrowed
MAX_COLOUR_ERROR = 32  # of 255, per channel: the most a palette may change a pixel
MIN_WIDTH = 640  # px: narrower, the reports' text is no longer legible
PAD = 6  # px around a part

# Forces lazy images to load and waits until every image is decoded and the fonts are in.
SETTLE_JS = """
async () => {
  const imgs = [...document.images];
  for (const img of imgs) img.loading = "eager";
  await Promise.all(imgs.map((img) => img.decode().catch(() => null)));
  await document.fonts.ready;
  return imgs.length;
}
"""

# The box (page coordinates) of a part: the first `tag` whose text starts with `text`,
# then its following siblings up to one of `stops` ([tag, text prefix]) or the
# `max_figures`+1-th <figure>. Null when the heading is not there.
PART_JS = """
([tag, text, stops, maxFigures]) => {
  const starts = (el, prefix) => el.textContent.trim().startsWith(prefix);
  const head = [...document.getElementsByTagName(tag)].find((h) => starts(h, text));
  if (!head) return null;
  const parts = [head];
  let figures = 0;
  for (let n = head.nextElementSibling; n; n = n.nextElementSibling) {
    if (stops.some(([t, p]) => n.tagName === t.toUpperCase() && starts(n, p))) break;
    if (n.tagName === "SCRIPT" || n.tagName === "STYLE") continue;
    if (n.tagName === "FIGURE" && maxFigures !== null && figures++ >= maxFigures) break;
    parts.push(n);
  }
  const rects = parts.map((el) => el.getBoundingClientRect()).filter((r) => r.height > 0);
  const left = Math.min(...rects.map((r) => r.left));
  const right = Math.max(...rects.map((r) => r.right));
  const top = Math.min(...rects.map((r) => r.top));
  const bottom = Math.max(...rects.map((r) => r.bottom));
  return { x: left + window.scrollX, y: top + window.scrollY, width: right - left,
           height: bottom - top };
}
"""

# the summary table's value of `key` (its first column) in a subject report
SUMMARY_JS = """
(key) => {
  for (const row of document.querySelectorAll("table tr")) {
    const cells = row.querySelectorAll("td");
    if (cells.length === 2 && cells[0].textContent.trim() === key) {
      return cells[1].textContent.trim();
    }
  }
  return null;
}
"""

NEXT_H2 = (("h2", ""),)
# the header, input validation and stage table end where the figures (or stack QC) begin
STAGE_STOPS = (("h3", "Stack quality"), ("h2", "Bias-field"), ("h2", "Input images"))


@dataclass(frozen=True)
class Part:
    """One screenshot: where the part starts and what ends it."""

    name: str  # PNG file stem
    tag: str  # heading tag
    text: str  # the heading's text starts with this
    stops: tuple[tuple[str, str], ...] = NEXT_H2
    max_figures: int | None = None  # keep at most this many <figure>s


# a fetal subject report, in page order
FETAL_PARTS = (
    Part("stages", "h1", "earlybrain report", STAGE_STOPS),
    Part("stack-qc", "h3", "Stack quality ranking", NEXT_H2),
    Part("masks", "h2", "Bias-field correction and brain masks", NEXT_H2, max_figures=2),
    Part("recon", "h2", "Slice-to-volume reconstruction"),
    Part("registration", "h2", "Atlas registration"),
    Part("segmentation", "h2", "Segmentation"),
    Part("brainage", "h2", "Brain age"),
)
INFANT_PARTS = (
    Part("stages", "h1", "earlybrain report", STAGE_STOPS),
    Part("brainage", "h2", "Brain age"),
)
COHORT_PARTS = (
    Part("cohort-table", "h1", "earlybrain cohort overview", (("h2", "Flagged outliers"),)),
    Part("cohort-outliers", "h2", "Flagged outliers", (("h2", "Growth charts"),)),
    Part("cohort-growth", "h2", "Growth charts", (("h2", "Failed sessions"),)),
)


def _encoded(img: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _narrowed(img: Any, width: int) -> Any:
    from PIL import Image

    height = round(img.height * width / img.width)
    return img.resize((width, height), Image.Resampling.LANCZOS)


def _palette(img: Any) -> Any | None:
    """`img` in 256 colours, or None when that changes a pixel's colour noticeably (a
    thin cyan outline must not turn blue)."""
    from PIL import Image, ImageChops

    pal = img.quantize(256, Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
    extrema = ImageChops.difference(img, pal.convert("RGB")).getextrema()
    return pal if max(hi for _, hi in extrema) <= MAX_COLOUR_ERROR else None


def shrink(png: bytes) -> bytes:
    """The PNG, at most MAX_WIDTH wide; above MAX_BYTES in 256 colours (where they keep
    the colours), then narrowed step by step, not below MIN_WIDTH."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > MAX_WIDTH:
        img = _narrowed(img, MAX_WIDTH)
    while True:
        options = [_encoded(img)]
        if len(options[0]) > MAX_BYTES and (pal := _palette(img)) is not None:
            options.append(_encoded(pal))
        data = min(options, key=len)
        if len(data) <= MAX_BYTES or img.width <= MIN_WIDTH:
            return data
        img = _narrowed(img, max(MIN_WIDTH, round(img.width * 0.85)))


@contextmanager
def browser_page() -> Iterator[Any]:
    """A page of headless Debian Chromium, offline (as tests/test_report_browser.py)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(offline=True, viewport=VIEWPORT, device_scale_factor=1)
        context.set_default_timeout(60_000)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def open_report(page: Any, report: Path) -> None:
    """Load a report and wait until its images are decoded."""
    page.goto(report.resolve().as_uri(), wait_until="load")
    page.evaluate(SETTLE_JS)


def shoot(page: Any, report: Path, parts: tuple[Part, ...], prefix: str, out: Path) -> list[Path]:
    """Screenshot the `parts` of one report as `<prefix><part>.png`; returns the files."""
    open_report(page, report)
    written = []
    for part in parts:
        box = page.evaluate(PART_JS, [part.tag, part.text, list(part.stops), part.max_figures])
        if not box or box["height"] <= 0:
            print(f"  skipped {prefix}{part.name}: no '{part.text}' in {report.name}")
            continue
        clip = {
            "x": max(box["x"] - PAD, 0),
            "y": max(box["y"] - PAD, 0),
            "width": box["width"] + 2 * PAD,
            "height": box["height"] + 2 * PAD,
        }
        png = shrink(page.screenshot(clip=clip, full_page=True, animations="disabled"))
        path = out / f"{prefix}{part.name}.png"
        path.write_bytes(png)
        written.append(path)
    return written


def subject_reports(results: Path) -> list[Path]:
    """The subject reports of a workflow output folder, sorted by name."""
    return sorted(results.glob("sub-*.html"))


def classify(page: Any, reports: list[Path]) -> dict[str, Path]:
    """The first fetal and the first infant report whose status is ok, by the summary
    table of each report ({"fetal": path, "infant": path})."""
    found: dict[str, Path] = {}
    for report in reports:
        open_report(page, report)
        kind, status = page.evaluate(SUMMARY_JS, "kind"), page.evaluate(SUMMARY_JS, "status")
        if kind in ("fetal", "infant") and status == "ok":
            found.setdefault(kind, report)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("demo/results/earlybrain"))
    ap.add_argument("--real-report", type=Path, help="a subject report made on real data")
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    args = ap.parse_args(argv)
    cohort = args.results / "group" / "cohort.html"
    if not cohort.is_file():
        print(
            f"no demo reports in {args.results} ({cohort} missing): run `bash scripts/demo.sh` "
            "first",
            file=sys.stderr,
        )
        return 2
    if args.real_report is not None and not args.real_report.is_file():
        print(f"{args.real_report}: no such report", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with browser_page() as page:
        found = classify(page, subject_reports(args.results))
        for key, parts, prefix in (
            ("fetal", FETAL_PARTS, "subject-"),
            ("infant", INFANT_PARTS, "infant-"),
        ):
            if key in found:
                print(f"{key} subject: {found[key]}")
                written += shoot(page, found[key], parts, prefix, args.out)
            else:
                print(f"no {key} subject report in {args.results}: its screenshots skipped")
        written += shoot(page, cohort, COHORT_PARTS, "", args.out)
        if args.real_report is not None:
            print(f"real-data report: {args.real_report}")
            written += shoot(page, args.real_report, FETAL_PARTS, "real-subject-", args.out)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1000:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
