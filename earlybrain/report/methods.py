"""A "Methods" paragraph for the subject report, written from what actually ran.

Everything quantitative comes from the JSON sidecars and QC files the steps wrote next
to their outputs (the parameters they really used, after any capping) and from the model
cards of the networks' weights, never from the current config, which may have changed
since. A stage gets a sentence only when the stage table says it ran (done, or flagged
for a check), so a session that failed gets no invented methods. Library versions are
read from the installed package metadata (no heavy imports at report time).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from earlybrain.report.analysis_methods import (
    brainage_paragraph,
    infant_brainage_paragraph,
    registration_paragraph,
    segmentation_paragraph,
)
from earlybrain.report.html import esc
from earlybrain.report.preprocessing_methods import (
    brain_mask_paragraph,
    n4_paragraph,
    recon_paragraph,
    stack_qc_paragraph,
)
from earlybrain.report.references import (
    BASE_SOFTWARE,
    REFERENCES,
    STAGE_SOFTWARE,
    Methods,
    software_versions,
)


def build_methods(
    stages: Sequence[dict[str, str]],
    *,
    n4_sidecars: Sequence[dict[str, Any]] = (),
    recon_sidecar: dict[str, Any] | None = None,
    recon_metrics: dict[str, Any] | None = None,
    brain_mask_sidecars: Sequence[dict[str, Any]] = (),
    stack_qc_sidecar: dict[str, Any] | None = None,
    stack_qc_rows: Sequence[dict[str, str]] = (),
    registration_qc: dict[str, Any] | None = None,
    segmentation_qc: dict[str, Any] | None = None,
    segmentation_card: dict[str, Any] | None = None,
    brainage: dict[str, Any] | None = None,
    brainage_card: dict[str, Any] | None = None,
    brainage_norms: dict[str, Any] | None = None,
    software: list[tuple[str, str]] | None = None,
) -> Methods:
    """The methods of one session, only for the stages whose status is "done"."""
    status = {s.get("key"): s.get("status") for s in stages}
    m = Methods()
    if status.get("inputs") != "done":
        m.paragraphs.append(
            "No processing ran for this session: its inputs failed validation, so there "
            "are no methods to report."
        )
        return m
    if status.get("n4") == "done":
        text = n4_paragraph(n4_sidecars, m)
        if text:
            m.paragraphs.append(text)
    if status.get("brain_mask") == "done":
        m.paragraphs.append(brain_mask_paragraph(brain_mask_sidecars, m))
    if status.get("stack_qc") == "done":
        m.paragraphs.append(stack_qc_paragraph(stack_qc_sidecar or {}, stack_qc_rows))
    if status.get("svr_srr") in ("done", "flagged"):
        text = recon_paragraph(recon_sidecar or {}, recon_metrics or {}, m)
        m.paragraphs.append(
            text
            or "A slice-to-volume reconstruction ran, but its parameter sidecar could not be "
            "read, so its settings are not reported here."
        )
    if status.get("atlas_registration") in ("done", "flagged"):
        m.paragraphs.append(registration_paragraph(registration_qc or {}, m))
    if status.get("segmentation") in ("done", "flagged"):
        m.paragraphs.append(
            segmentation_paragraph(segmentation_qc or {}, segmentation_card or {}, m)
        )
    if status.get("brain_age") in ("done", "flagged"):
        result = brainage or {}
        m.paragraphs.append(
            infant_brainage_paragraph(result, brainage_norms or {}, m)
            if result.get("population") == "infant"
            else brainage_paragraph(result, brainage_card or {}, brainage_norms or {}, m)
        )
    if not m.paragraphs:
        m.paragraphs.append("No processing stage beyond input validation completed.")
        return m
    versions = {
        g.get("Version")
        for side in [*n4_sidecars, recon_sidecar or {}]
        for g in side.get("GeneratedBy", [])
        if g.get("Name") == "earlybrain" and g.get("Version")
    }
    if software is None:
        names = list(BASE_SOFTWARE)
        for key, extra in STAGE_SOFTWARE.items():
            if status.get(key) in ("done", "flagged"):
                names += [n for n in extra if n not in names]
        software = software_versions(names)
    m.software = list(software)
    if versions - {dict(m.software).get("earlybrain")}:
        m.software.append(("earlybrain (recorded by the steps)", ", ".join(sorted(versions))))
    m.paragraphs.append(
        f"The steps were run as a Snakemake workflow {m.cite('snakemake')}; software "
        "versions are listed below."
    )
    return m


def methods_html(m: Methods) -> str:
    """The report's Methods section (escaped text, numbered references)."""
    parts = ['<h2 id="methods">Methods</h2>']
    parts.extend(f"<p>{esc(p)}</p>" for p in m.paragraphs)
    if m.software:
        parts.append(
            '<p class="muted">Software (versions installed where this report was written): '
            + ", ".join(f"{esc(n)} {esc(v)}" for n, v in m.software)
            + "</p>"
        )
    if m.references:
        parts.append("<h3>References</h3><ol>")
        parts.extend(f"<li>{esc(REFERENCES[k][1])}</li>" for k in m.references)
        parts.append("</ol>")
    return "\n".join(parts)
