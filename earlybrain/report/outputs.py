"""The outputs of one session that its report reads, declared once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Annotated, Any

from earlybrain.stepkit import Input


@dataclass(frozen=True)
class SessionOutputs:
    """What a session's stages wrote, as its report reads it.

    One field per output: the report rule's named inputs, the options of `earlybrain
    step report` and salvage's view of a failed session are these fields. N4, bias and
    foreground paths are in the order of the validated images (empty when validation
    failed). A stage output left None did not run for this session; one given but
    missing failed.
    """

    validation: Annotated[Path, Input("validation JSON")]
    n4: Annotated[list[Path], Input("N4-corrected images")] = ()
    bias: Annotated[list[Path], Input("their bias fields")] = ()
    mask: Annotated[list[Path], Input("their foreground masks")] = ()
    n4_figures: Annotated[list[Path], Input("n4-figure PNGs, same order")] = ()
    brain_masks: Annotated[list[Path], Input("brain mask per stack / image")] = ()
    stack_qc: Annotated[Path | None, Input("stack quality TSV")] = None
    recon_metrics: Annotated[Path | None, Input("SVR/SRR QC JSON")] = None
    recon_figures: Annotated[list[Path], Input("SVR/SRR PNG figures")] = ()
    registration_qc: Annotated[Path | None, Input("atlas registration QC JSON")] = None
    registration_figure: Annotated[Path | None, Input("registration check PNG")] = None
    segmentation_qc: Annotated[Path | None, Input("segmentation QC JSON")] = None
    volumes: Annotated[Path | None, Input("tissue volumes TSV")] = None
    segmentation_figure: Annotated[Path | None, Input("segmentation PNG")] = None
    brainage: Annotated[Path | None, Input("brain-age JSON")] = None
    zscores: Annotated[Path | None, Input("z-scores TSV")] = None
    brainage_figure: Annotated[Path | None, Input("normative chart PNG")] = None

    @classmethod
    def of(cls, files: Mapping[str, Any]) -> SessionOutputs:
        """From named files as the workflow lists them: an absent one is [] or ""."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            given = files.get(f.name) or []
            given = [given] if isinstance(given, (str, os.PathLike)) else list(given)
            if f.default is MISSING:  # the one required file
                values[f.name] = Path(given[0])
            elif f.default is None:
                values[f.name] = Path(given[0]) if given else None
            else:
                values[f.name] = [Path(p) for p in given]
        return cls(**values)
