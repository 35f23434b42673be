"""Growth curves that size the phantom.

Values are approximate population means read from published fetal and infant
biometry, interpolated piecewise-linearly (log-linearly for volumes):
- biparietal diameter, outer-to-outer (Chitty et al. 1994, BJOG),
- transcerebellar diameter (Chavez et al. 2003 / Hill et al. 1990: ~1 mm per week
  up to 24 w, faster after),
- infant total brain volume (Knickmeyer et al. 2008: +101 % in the first year,
  +15 % in the second).
They only need to be realistic in shape and scale: tests check the phantom follows
them, and downstream stages are tested against the phantom, not against these.
"""

from __future__ import annotations

import numpy as np

_GA = np.array([20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40], dtype=float)
_BPD_MM = np.array([49, 55, 61, 67, 72, 77, 82, 86, 89, 92, 94], dtype=float)
_TCD_MM = np.array([20, 22, 25, 28, 32, 35, 39, 43, 46, 49, 51], dtype=float)

_INFANT_MONTHS = np.array([0, 3, 6, 12, 18, 24], dtype=float)
_INFANT_BRAIN_ML = np.array([400, 560, 680, 850, 930, 980], dtype=float)
_INFANT_TCD_MM = np.array([51, 56, 59, 62, 64, 66], dtype=float)

WEEKS_PER_MONTH = 4.345
TERM_WEEKS = 40.0


def bpd_mm(ga_weeks: float) -> float:
    """Biparietal diameter (outer skull to outer skull) for a gestational age."""
    return float(np.interp(ga_weeks, _GA, _BPD_MM))


def tcd_mm(ga_weeks: float) -> float:
    """Transcerebellar diameter for a gestational age."""
    return float(np.interp(ga_weeks, _GA, _TCD_MM))


def infant_brain_volume_ml(months: float) -> float:
    """Total brain tissue volume of an infant (log-linear between published points)."""
    return float(np.exp(np.interp(months, _INFANT_MONTHS, np.log(_INFANT_BRAIN_ML))))


def infant_tcd_mm(months: float) -> float:
    return float(np.interp(months, _INFANT_MONTHS, _INFANT_TCD_MM))


def months_to_pma_weeks(months: float) -> float:
    """Postmenstrual age of a term-born infant of `months` postnatal age."""
    return TERM_WEEKS + months * WEEKS_PER_MONTH
