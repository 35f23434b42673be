"""What a Methods section cites and which software it names: the references its
paragraphs may cite, the distributions whose versions a reader needs, and the `Methods`
record that the paragraph writers fill in data-flow order.

Versions are read from the installed package metadata, so writing a report imports no
heavy library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from earlybrain import __version__

# Plain references (no links: reports are read offline): key -> (in-text form, full).
REFERENCES: dict[str, tuple[str, str]] = {
    "n4": (
        "Tustison et al. 2010",
        "Tustison NJ, Avants BB, Cook PA, Zheng Y, Egan A, Yushkevich PA, Gee JC. N4ITK: "
        "improved N3 bias correction. IEEE Transactions on Medical Imaging. "
        "2010;29(6):1310-1320. doi:10.1109/TMI.2010.2046908",
    ),
    "svr_em": (
        "Kuklisova-Murgasova et al. 2012",
        "Kuklisova-Murgasova M, Quaghebeur G, Rutherford MA, Hajnal JV, Schnabel JA. "
        "Reconstruction of fetal brain MRI with intensity matching and complete outlier "
        "removal. Medical Image Analysis. 2012;16(8):1550-1564. doi:10.1016/j.media.2012.07.004",
    ),
    "svr_gpu": (
        "Kainz et al. 2015",
        "Kainz B, Steinberger M, Wein W, Kuklisova-Murgasova M, Malamateniou C, Keraudren K, "
        "Torsney-Weir T, Rutherford M, Aljabar P, Hajnal JV, Rueckert D. Fast volume "
        "reconstruction from motion corrupted stacks of 2D slices. IEEE Transactions on "
        "Medical Imaging. 2015;34(9):1901-1913. doi:10.1109/TMI.2015.2415453",
    ),
    "snakemake": (
        "Mölder et al. 2021",
        "Mölder F, Jablonski KP, Letcher B, Hall MB, Tomkins-Tinch CH, Sochat V, Forster J, "
        "Lee S, Twardziok SO, Kanitz A, Wilm A, Holtgrewe M, Rahmann S, Nahnsen S, Köster J. "
        "Sustainable data analysis with Snakemake. F1000Research. 2021;10:33. "
        "doi:10.12688/f1000research.29032.2",
    ),
    "unet": (
        "Ronneberger et al. 2015",
        "Ronneberger O, Fischer P, Brox T. U-Net: convolutional networks for biomedical image "
        "segmentation. MICCAI 2015, LNCS 9351:234-241. doi:10.1007/978-3-319-24574-4_28",
    ),
    "syn": (
        "Avants et al. 2008",
        "Avants BB, Epstein CL, Grossman M, Gee JC. Symmetric diffeomorphic image registration "
        "with cross-correlation: evaluating automated labeling of elderly and neurodegenerative "
        "brain. Medical Image Analysis. 2008;12(1):26-41. doi:10.1016/j.media.2007.06.004",
    ),
    "antsx": (
        "Tustison et al. 2021",
        "Tustison NJ, Cook PA, Holbrook AJ, Johnson HJ, Muschelli J, Devenyi GA, Duda JT, Das SR, "
        "Cullen NC, Gillen DL, Yassa MA, Stone JR, Gee JC, Avants BB. The ANTsX ecosystem for "
        "quantitative biological and medical imaging. Scientific Reports. 2021;11:9068. "
        "doi:10.1038/s41598-021-87564-6",
    ),
    "monai": (
        "Cardoso et al. 2022",
        "Cardoso MJ, Li W, Brown R, Ma N, Kerfoot E, Wang Y, et al. MONAI: an open-source "
        "framework for deep learning in healthcare. arXiv:2211.02701. 2022.",
    ),
    "synthseg": (
        "Billot et al. 2023",
        "Billot B, Greve DN, Puonti O, Thielscher A, Van Leemput K, Fischl B, Dalca AV, "
        "Iglesias JE. SynthSeg: segmentation of brain MRI scans of any contrast and resolution "
        "without retraining. Medical Image Analysis. 2023;86:102789. "
        "doi:10.1016/j.media.2023.102789",
    ),
    "myelination_mri": (
        "Barkovich et al. 1988",
        "Barkovich AJ, Kjos BO, Jackson DE Jr, Norman D. Normal maturation of the neonatal "
        "and infant brain: MR imaging at 1.5 T. Radiology. 1988;166(1):173-180. "
        "doi:10.1148/radiology.166.1.3336675",
    ),
    "wm_development": (
        "Dubois et al. 2014",
        "Dubois J, Dehaene-Lambertz G, Kulikova S, Poupon C, Hüppi PS, Hertz-Pannier L. The "
        "early development of brain white matter: a review of imaging studies in fetuses, "
        "newborns and infants. Neuroscience. 2014;276:48-71. "
        "doi:10.1016/j.neuroscience.2013.12.044",
    ),
    "deep_ensemble": (
        "Lakshminarayanan et al. 2017",
        "Lakshminarayanan B, Pritzel A, Blundell C. Simple and scalable predictive uncertainty "
        "estimation using deep ensembles. Advances in Neural Information Processing Systems 30 "
        "(NIPS 2017). 2017:6402-6413. arXiv:1612.01474",
    ),
}

# Distributions whose versions a reader needs, by the stage that used them.
BASE_SOFTWARE = ("earlybrain", "snakemake", "numpy", "nibabel")
STAGE_SOFTWARE = {
    "n4": ("antspyx",),
    "brain_mask": ("torch", "monai"),
    "svr_srr": ("torch",),
    "atlas_registration": ("antspyx",),
    "segmentation": ("torch", "monai"),
    "brain_age": ("torch", "scipy"),
}


@dataclass
class Methods:
    """Paragraphs in data-flow order, the references they cite, and software versions."""

    paragraphs: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # keys of REFERENCES
    software: list[tuple[str, str]] = field(default_factory=list)

    def cite(self, *keys: str) -> str:
        """Register references and return their in-text form, e.g. "(Tustison et al. 2010)"."""
        for k in keys:
            if k not in self.references:
                self.references.append(k)
        return "(" + "; ".join(REFERENCES[k][0] for k in keys) + ")"

    def as_dict(self) -> dict[str, Any]:
        return {
            "paragraphs": self.paragraphs,
            "references": [REFERENCES[k][1] for k in self.references],
            "software": dict(self.software),
        }


def software_versions(names: Sequence[str] = BASE_SOFTWARE) -> list[tuple[str, str]]:
    """Installed versions from package metadata (cheap: nothing is imported)."""
    out = []
    for name in names:
        if name == "earlybrain":
            out.append((name, __version__))
            continue
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            continue
    return out
