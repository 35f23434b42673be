"""Atlases: the manifest format, template selection by age, and spatiotemporal atlas building.

`load_manifest` / `select_template` / `load_template` read an atlas (ours or a published
one with a manifest and a label mapping); `build_atlas` (files) and `build_templates`
(in memory) make one from a cohort; `earlybrain.atlas.default` rebuilds the shipped one.
"""
