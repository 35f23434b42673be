"""The HTML reports as a person sees them: opened in headless Chromium (Debian's package).

The reports come from a real workflow run on a tiny simulated cohort with one subject
that fails validation. The checks are generic so they keep holding as stages add
sections: every image (and inline SVG) renders, every relative link points at an
existing file and navigating it works (cohort -> each subject -> back), nothing is
logged at error level, and nothing is requested outside file:// and data: (reports
must open offline). A full-page screenshot of every report is left in the test's
tmp_path for a person to look at.

Chromium is driven by Playwright with the system browser (`executable_path`), so no
browser is downloaded. Without Chromium or Playwright the test is skipped, except under
CI=true, where it fails: CI must not pass without having looked at the reports.
"""

from __future__ import annotations

import base64
import csv
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urlparse

import numpy as np
import pytest
from test_report import process_sessions
from test_report_brainage import brainage_cohort

from earlybrain.report.figures import input_figure

pytestmark = pytest.mark.slow

BROWSER_NAMES = ("chromium", "chromium-browser")
# schemes a self-contained report may load from: itself, sibling files, inline data
LOCAL_SCHEMES = {"file", "data", "blob", "about"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Forces lazy images to load, waits for every image to decode, then measures it and
# every inline SVG. decode() rejects for a broken image; the message is kept.
MEDIA_JS = """
async () => {
  const imgs = [...document.images];
  for (const img of imgs) img.loading = "eager";
  const decoded = await Promise.all(
    imgs.map((img) => img.decode().then(() => "", (e) => String(e)))
  );
  const images = imgs.map((img, i) => ({
    src: (img.currentSrc || img.src || "").slice(0, 80),
    alt: img.alt,
    complete: img.complete,
    width: img.naturalWidth,
    height: img.naturalHeight,
    error: decoded[i],
  }));
  const svgs = [...document.querySelectorAll("svg")]
    .filter((s) => !s.parentElement.closest("svg"))
    .map((s) => {
      const r = s.getBoundingClientRect();
      return { width: r.width, height: r.height, id: s.id };
    });
  return { images, svgs };
}
"""

# resolved with URL(): an SVG <a> (a chart point) has no string `href` property
LINKS_JS = """
() => [...document.querySelectorAll("a[href]")].map((a) => ({
  href: a.getAttribute("href"),
  url: new URL(a.getAttribute("href"), document.baseURI).href,
  text: a.textContent.trim(),
}))
"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _missing(reason: str) -> None:
    """Fail under CI (a missing browser must not pass silently), skip elsewhere."""
    reason += "; run `bash scripts/install.sh` (installs Debian's chromium and playwright)"
    if _in_ci():
        pytest.fail(f"CI=true and the report browser test cannot run: {reason}")
    pytest.skip(reason)


def find_chromium() -> str | None:
    """EARLYBRAIN_CHROMIUM if set, else Debian's `chromium` on PATH."""
    given = os.environ.get("EARLYBRAIN_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The browser to drive, or skip/fail. Session scope so that it is resolved before the
    session-scoped workflow run: a missing browser costs no minute-long run."""
    exe = find_chromium()
    if exe is None:
        _missing(f"no Chromium found (looked for {', '.join(BROWSER_NAMES)} on PATH)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the Python package playwright is not installed")
    return exe


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """Headless system Chromium under Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        # a Chromium that is there but does not start is a real failure, never a skip
        chromium = pw.chromium.launch(executable_path=chromium_path, headless=True)
    except Exception:
        pw.stop()
        raise
    yield chromium
    chromium.close()
    pw.stop()


@pytest.fixture(scope="module")
def reports(chromium_path: str, cohort_workflow_run) -> dict[str, Any]:
    """Paths of the cohort report, every subject report and the cohort table rows."""
    assert cohort_workflow_run["rc"] == 1, "not only sub-f02 (broken on purpose) failed?"
    deriv = cohort_workflow_run["out"] / "earlybrain"
    cohort_html = deriv / "group" / "cohort.html"
    assert cohort_html.is_file()
    subjects = sorted(deriv.glob("sub-*.html"))
    assert subjects, f"no subject reports in {deriv}"
    with (deriv / "group" / "cohort.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {"deriv": deriv, "cohort": cohort_html, "subjects": subjects, "rows": rows}


class PageLog:
    """Everything a page did that a self-contained, error-free report must not do."""

    def __init__(self, page: Any) -> None:
        self.console: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.failed: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("request", lambda req: self.requests.append(req.url))
        page.on("requestfailed", lambda req: self.failed.append(f"{req.url}: {req.failure}"))

    def _on_console(self, msg: Any) -> None:
        self.console.append(f"{msg.type}: {msg.text}")
        if msg.type in {"error", "assert"}:
            loc = msg.location or {}
            self.errors.append(f"console {msg.type}: {msg.text} ({loc.get('url', '')})")


@pytest.fixture
def page(browser) -> Iterator[tuple[Any, PageLog]]:
    """A fresh page in an offline context: a report that needs the network breaks here."""
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    log = PageLog(pg)
    yield pg, log
    context.close()


def url_to_path(url: str) -> Path:
    parsed = urlparse(urldefrag(url).url)
    assert parsed.scheme == "file", url
    return Path(unquote(parsed.path))


def audit(page: Any, log: PageLog, report: Path, shots: Path) -> dict[str, Any]:
    """Open one report, check what it shows and loads, screenshot it; returns what it found.

    Problems are collected as text rather than asserted one by one, so a failure names
    every broken image and link of the report at once.
    """
    start = len(log.errors), len(log.requests), len(log.failed)
    page.goto(report.as_uri(), wait_until="load")
    media = page.evaluate(MEDIA_JS)
    links = page.evaluate(LINKS_JS)
    problems: list[str] = []
    for img in media["images"]:
        if not (img["complete"] and img["width"] > 0 and img["height"] > 0) or img["error"]:
            problems.append(f"image not rendered: {img}")
    for svg in media["svgs"]:
        if svg["width"] <= 0 or svg["height"] <= 0:
            problems.append(f"inline SVG has no size: {svg}")
    for link in links:
        scheme = urlparse(link["url"]).scheme
        if link["href"].startswith("#"):
            target = urldefrag(link["url"]).fragment
            if target and not page.locator(f"[id='{target}'], a[name='{target}']").count():
                problems.append(f"in-page link to a missing anchor: {link}")
        elif scheme == "file" and not url_to_path(link["url"]).is_file():
            problems.append(f"link to a missing file: {link}")
    problems += log.errors[start[0] :]
    problems += [
        f"request outside file:// (not self-contained): {u}"
        for u in log.requests[start[1] :]
        if urlparse(u).scheme not in LOCAL_SCHEMES
    ]
    problems += [f"request failed: {f}" for f in log.failed[start[2] :]]

    shot = shots / f"{report.stem}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(PNG_SIGNATURE), shot
    return {"problems": problems, "links": links, "n_images": len(media["images"]), "shot": shot}


def test_cohort_report_renders(reports, page, tmp_path: Path) -> None:
    pg, log = page
    found = audit(pg, log, reports["cohort"], tmp_path)
    assert found["problems"] == [], f"{reports['cohort']}:\n" + "\n".join(found["problems"])
    assert "cohort" in pg.title().lower()


def test_subject_reports_render(reports, page, tmp_path: Path) -> None:
    pg, log = page
    problems, n_images = [], 0
    for report in reports["subjects"]:
        found = audit(pg, log, report, tmp_path)
        problems += [f"{report.name}: {p}" for p in found["problems"]]
        n_images += found["n_images"]
        assert pg.title().startswith("earlybrain report"), report
    assert problems == [], "\n".join(problems)
    assert n_images > 0, "no images in any subject report: the image check tested nothing"
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        f"{r.stem}.png" for r in reports["subjects"]
    )


def test_failed_subject_is_reported(reports, page, tmp_path: Path) -> None:
    """The failed-subject path: its row says failed and its own report renders cleanly."""
    failed = [r for r in reports["rows"] if r["status"] == "failed"]
    assert [r["participant_id"] for r in failed] == ["sub-f02"]
    report = (reports["cohort"].parent / failed[0]["report"]).resolve()
    pg, log = page
    found = audit(pg, log, report, tmp_path)
    assert found["problems"] == [], "\n".join(found["problems"])
    assert "failed" in pg.locator("body").inner_text()


def test_links_between_cohort_and_subjects(reports, page) -> None:
    """Cohort -> every subject report by clicking its link, and each one back to the cohort."""
    pg, _ = page
    cohort_url = reports["cohort"].as_uri()
    pg.goto(cohort_url, wait_until="load")
    files = {
        link["href"]: link
        for link in pg.evaluate(LINKS_JS)
        if urlparse(link["url"]).scheme == "file" and not link["href"].startswith("#")
    }
    to_subjects = [link for href, link in files.items() if href.endswith(".html")]
    targets = sorted({url_to_path(link["url"]).resolve() for link in to_subjects})
    # every subject report on disk is reachable from the cohort, and besides them only the
    # cohort table is linked (a session is linked from the table, "Failed sessions", charts)
    assert targets == sorted(p.resolve() for p in reports["subjects"])
    others = {url_to_path(link["url"]).resolve() for link in files.values()} - set(targets)
    assert others == {(reports["cohort"].parent / "cohort.tsv").resolve()}

    for link in to_subjects:
        pg.goto(cohort_url, wait_until="load")
        with pg.expect_navigation(wait_until="load"):
            pg.locator(f"a[href='{link['href']}']").first.click()
        assert url_to_path(pg.url).resolve() == url_to_path(link["url"]).resolve()
        assert pg.title().startswith("earlybrain report"), link
        back = [
            b
            for b in pg.evaluate(LINKS_JS)
            if urlparse(b["url"]).scheme == "file"
            and url_to_path(b["url"]).resolve() == reports["cohort"].resolve()
        ]
        assert back, f"{pg.url} has no link back to the cohort report"
        with pg.expect_navigation(wait_until="load"):
            pg.locator(f"a[href='{back[0]['href']}']").first.click()
        assert url_to_path(pg.url).resolve() == reports["cohort"].resolve()
        assert "cohort" in pg.title().lower()


BROKEN_REPORT = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>broken</title>
<link rel="stylesheet" href="http://127.0.0.1:9/cdn/style.css"></head><body>
<img src="missing.png" alt="missing file">
<img src="data:image/png;base64,AAAA" alt="corrupt data">
<img src="data:image/png;base64,{png}" alt="fine">
<svg width="0" height="0"><circle r="1"/></svg>
<a href="nope.html">missing page</a> <a href="#nowhere">missing anchor</a>
<a href="ok.html">fine</a> <a href="#top" id="top">fine anchor</a>
<script>console.error("boom")</script>
</body></html>"""


def test_audit_catches_broken_reports(page, tmp_path: Path) -> None:
    """Negative control: each kind of breakage the report tests look for is caught."""
    png = input_figure(np.ones((8, 8, 4), dtype=np.float32), axis=2)
    site = tmp_path / "site"
    site.mkdir()
    (site / "ok.html").write_text("<!DOCTYPE html><title>ok</title>")
    bad = site / "bad.html"
    bad.write_text(BROKEN_REPORT.replace("{png}", base64.b64encode(png).decode()))
    pg, log = page
    problems = "\n".join(audit(pg, log, bad, tmp_path)["problems"])
    for expected in (
        "image not rendered: {'src': 'file://",  # missing file
        "'alt': 'corrupt data'",
        "inline SVG has no size",
        "link to a missing file: {'href': 'nope.html'",
        "in-page link to a missing anchor: {'href': '#nowhere'",
        "console error: boom",
        "request outside file:// (not self-contained): http://127.0.0.1:9/cdn/style.css",
        "request failed: http://127.0.0.1:9/cdn/style.css",
    ):
        assert expected in problems, f"{expected!r} not caught in:\n{problems}"
    assert "'alt': 'fine'" not in problems and "ok.html" not in problems
    assert (tmp_path / "bad.png").is_file()


@pytest.fixture(scope="module")
def brainage_cohort_report(chromium_path: str, tmp_path_factory) -> dict[str, Any]:
    """A cohort report with brain age and growth charts (test_report_brainage's fixture
    files: sub-f01 with flagged ventricles, sub-f02 failed, sub-f03 and sub-f04)."""
    root = tmp_path_factory.mktemp("brainage_browser")
    return brainage_cohort(process_sessions(root), root)


def test_growth_chart_points_link_to_subject_reports(
    brainage_cohort_report, page, tmp_path: Path
) -> None:
    """Charts render, the table sorts, a chart point opens its subject report, which renders."""
    pg, log = page
    cohort = brainage_cohort_report["html"]
    found = audit(pg, log, cohort, tmp_path)
    assert found["problems"] == [], "\n".join(found["problems"])
    assert pg.locator("svg.chart").count() == 10  # 9 structures + brain age vs age
    assert (tmp_path / "cohort.png").is_file()

    pg.locator("th", has_text="predicted_age_weeks").click()
    first_column = pg.locator("table.sortable tbody tr td:first-child").all_inner_texts()
    assert first_column == ["sub-f03", "sub-f01", "sub-f04", "sub-f02"]  # n/a last

    point = pg.locator('svg.chart[aria-label="ventricles"] a[href="../sub-f01.html"]')
    assert point.count() == 1
    with pg.expect_navigation(wait_until="load"):
        point.click()
    subject = url_to_path(pg.url).resolve()
    assert subject == (cohort.parent / "../sub-f01.html").resolve()
    found = audit(pg, log, subject, tmp_path)
    assert found["problems"] == [], "\n".join(found["problems"])
    assert found["n_images"] == 4  # 2 N4 figures, the segmentation and the brain-age chart
    assert "ventricles volume z = +6.93" in pg.locator("body").inner_text()
    assert (tmp_path / "sub-f01.png").is_file()
