"""Every derivative file of a session, named once from its BIDS entities.

`Derivatives(root, sdir, prefix)` names the files of one session. Left at their
defaults, `sdir` and `prefix` are Snakemake's wildcards (`{sdir}`, `{prefix}`; an input
image's are `{ents}` and `{suffix}`), so the same method gives a rule its output pattern
and a later rule, the report or salvage the file it wrote: a name is spelt in one place.

A "volume" is what the atlas, segmentation and brain-age steps work on, named by its
stage entity: earlybrain's reconstruction `rec-svr`, an infant's image `mod-T2w`, a
reconstruction made elsewhere `rec-<label>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from earlybrain.io.sidecar import sidecar_path

RECON = "rec-svr"  # the stage entity of earlybrain's own reconstruction


def bids_name(*parts: str, ext: str) -> str:
    """`sub-01_rec-svr_desc-brain_mask.nii.gz` from its entities and suffix, in order."""
    return "_".join(p for p in parts if p) + ext


def sidecar(path: str) -> str:
    """The JSON sidecar of a derivative (written beside it by every step)."""
    return str(sidecar_path(path))


@dataclass(frozen=True)
class Derivatives:
    """The derivatives of one session below `root` (`<output_dir>/earlybrain`)."""

    root: str
    sdir: str = "{sdir}"  # sub-01 or sub-01/ses-1
    prefix: str = "{prefix}"  # sub-01 or sub-01_ses-1

    def folder(self, datatype: str) -> str:
        return f"{self.root}/{self.sdir}/{datatype}"

    def _file(self, datatype: str, *parts: str, ext: str) -> str:
        return f"{self.folder(datatype)}/{bids_name(*parts, ext=ext)}"

    # --- the session ---------------------------------------------------------------

    def validation(self) -> str:
        return self._file("qc", self.prefix, "validation", ext=".json")

    def stack_quality(self) -> str:
        return self._file("qc", self.prefix, "desc-stackquality", ext=".tsv")

    def report(self) -> str:
        return f"{self.root}/{self.prefix}.html"

    def stages(self) -> str:
        return f"{self.root}/group/stages/{self.prefix}_stages.json"

    # --- one input image: `stem` is its name before the suffix (sub-01_run-1) --------

    def n4(self, stem: str = "{ents}", suffix: str = "{suffix}") -> str:
        return self._file("anat", stem, "desc-n4", suffix, ext=".nii.gz")

    def bias(self, stem: str = "{ents}", suffix: str = "{suffix}") -> str:
        return self._file("anat", stem, "desc-biasfield", suffix, ext=".nii.gz")

    def foreground(self, stem: str = "{ents}", suffix: str = "{suffix}") -> str:
        return self._file("anat", stem, f"desc-foreground{suffix}", "mask", ext=".nii.gz")

    def n4_figure(self, stem: str = "{ents}", suffix: str = "{suffix}") -> str:
        return self._file("figures", stem, "desc-n4", suffix, ext=".png")

    def stack_mask(self, stem: str = "{ents}", suffix: str = "{suffix}") -> str:
        """A fetal stack's brain mask."""
        return self._file("anat", stem, f"desc-brain{suffix}", "mask", ext=".nii.gz")

    # --- a volume, by its stage entity ------------------------------------------------

    def volume(self, entity: str = RECON, suffix: str = "T2w") -> str:
        return self._file("anat", self.prefix, entity, suffix, ext=".nii.gz")

    def brain_mask(self, entity: str = RECON) -> str:
        return self._file("anat", self.prefix, entity, "desc-brain", "mask", ext=".nii.gz")

    def masking_qc(self, entity: str) -> str:
        """How the brain mask of an infant's image or a given reconstruction was made."""
        return self._file("qc", self.prefix, entity, "desc-masking", "qc", ext=".json")

    def recon_slices(self) -> str:
        return self._file("qc", self.prefix, RECON, "slices", ext=".tsv")

    def recon_metrics(self) -> str:
        return self._file("qc", self.prefix, RECON, "metrics", ext=".json")

    def _figure(self, entity: str, *name: str) -> str:
        return self._file("figures", self.prefix, entity, *name, ext=".png")

    def recon_views(self) -> str:
        return self._figure(RECON, "views")

    def recon_motion(self) -> str:
        return self._figure(RECON, "motion")

    def atlas_figure(self, entity: str = RECON) -> str:
        """The volume with the atlas labels warped onto it (the registration check)."""
        return self._figure(entity, "desc-atlas", "dseg")

    def segmentation_figure(self, entity: str = RECON) -> str:
        return self._figure(entity, "desc-segmentation", "dseg")

    def brainage_chart(self, entity: str = RECON) -> str:
        return self._figure(entity, "desc-brainage", "chart")
