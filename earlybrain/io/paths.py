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
        """The session's folder of one datatype: anat, xfm, qc or figures."""
        return f"{self.root}/{self.sdir}/{datatype}"

    def _file(self, datatype: str, *parts: str, ext: str) -> str:
        return f"{self.folder(datatype)}/{bids_name(*parts, ext=ext)}"

    # --- the session ---------------------------------------------------------------

    def validation(self) -> str:
        """The input check: status pass or fail, one message per problem, the age found and
        where, notes on each image."""
        return self._file("qc", self.prefix, "validation", ext=".json")

    def stack_quality(self) -> str:
        """Each fetal stack's quality measures, score, rank and whether it is kept (or why
        not); the best kept stack is the reconstruction's reference."""
        return self._file("qc", self.prefix, "desc-stackquality", ext=".tsv")

    def report(self) -> str:
        """The session's self-contained HTML report: stage table, figures, volumes, brain
        age, methods."""
        return f"{self.root}/{self.prefix}.html"

    def stages(self) -> str:
        """Each stage's status and the session's key values (age, volumes, brain age): what
        the cohort table is built from."""
        return f"{self.root}/group/stages/{self.prefix}_stages.json"

    # --- one input image: `stem` is its name before the suffix (sub-01_run-1) --------

    def n4(self, stem: str = "{ents}", suffix: str = "{suffix}") -> str:
        """The input image after N4 bias-field correction, intensities scaled so that the
        foreground's lower/upper percentiles are 0/1."""
        return self._file("anat", stem, "desc-n4", suffix, ext=".nii.gz")

    def bias(self, stem: str = "{ents}", suffix: str = "{suffix}") -> str:
        """The multiplicative bias field N4 removed (corrected = input / field)."""
        return self._file("anat", stem, "desc-biasfield", suffix, ext=".nii.gz")

    def foreground(self, stem: str = "{ents}", suffix: str = "{suffix}") -> str:
        """The rough foreground mask (Otsu of the smoothed image) N4 was fitted in; not a
        brain mask."""
        return self._file("anat", stem, f"desc-foreground{suffix}", "mask", ext=".nii.gz")

    def n4_figure(self, stem: str = "{ents}", suffix: str = "{suffix}") -> str:
        """PNG of the input image with N4's foreground outlined, after N4 (brain mask
        outlined), and its bias field."""
        return self._file("figures", stem, "desc-n4", suffix, ext=".png")

    def stack_mask(self, stem: str = "{ents}", suffix: str = "{suffix}") -> str:
        """A fetal stack's brain mask: the 2D U-Net's, or the lab's own from masks_dir
        (empty when the stack holds no fetal brain)."""
        return self._file("anat", stem, f"desc-brain{suffix}", "mask", ext=".nii.gz")

    # --- a volume, by its stage entity ------------------------------------------------

    def volume(self, entity: str = RECON, suffix: str = "T2w") -> str:
        """earlybrain's reconstruction: the motion-corrected super-resolution volume (SVR +
        SRR) of the kept stacks, isotropic."""
        return self._file("anat", self.prefix, entity, suffix, ext=".nii.gz")

    def brain_mask(self, entity: str = RECON) -> str:
        """The volume's brain mask: of a reconstruction, where most observing slice pixels
        lie in their stack's mask; of an infant's image or a given reconstruction, its own
        non-zero region or else the segmentation network's."""
        return self._file("anat", self.prefix, entity, "desc-brain", "mask", ext=".nii.gz")

    def masking_qc(self, entity: str) -> str:
        """How the brain mask of an infant's image or a given reconstruction was made
        (its own non-zero region or the network), and its volume."""
        return self._file("qc", self.prefix, entity, "desc-masking", "qc", ext=".json")

    def recon_slices(self) -> str:
        """One row per stack slice: its pose in the reconstruction, robust weight, intensity
        scale, NCC with its simulated slice, rejected or not."""
        return self._file("qc", self.prefix, RECON, "slices", ext=".tsv")

    def recon_metrics(self) -> str:
        """Reconstruction QC: reference stack, motion per stack, rejected slices,
        consistency NCC, convergence, device, timings."""
        return self._file("qc", self.prefix, RECON, "metrics", ext=".json")

    def _figure(self, entity: str, *name: str) -> str:
        return self._file("figures", self.prefix, entity, *name, ext=".png")

    def recon_views(self) -> str:
        """PNG of the reconstruction in sagittal, coronal and axial slices through the
        brain's centre."""
        return self._figure(RECON, "views")

    def recon_motion(self) -> str:
        """PNG of each stack's per-slice rotations, translations and weights, rejected
        slices marked."""
        return self._figure(RECON, "motion")

    def atlas_figure(self, entity: str = RECON) -> str:
        """PNG of the volume with the atlas labels, warped onto it, outlined (the
        registration check)."""
        return self._figure(entity, "desc-atlas", "dseg")

    def segmentation_figure(self, entity: str = RECON) -> str:
        """PNG of the volume with the network's tissue labels outlined (the segmentation
        check)."""
        return self._figure(entity, "desc-segmentation", "dseg")

    def brainage_chart(self, entity: str = RECON) -> str:
        """PNG of the session's volumes on their normative centile curves, and brain age
        against age."""
        return self._figure(entity, "desc-brainage", "chart")
