"""Fetal and infant brain anatomy as the whole package names and measures it: the label
tables (tissues, left/right) and the growth of the brain with age. The simulator draws
phantoms from it; the networks, volumetry, norms and reports read its names from it."""
