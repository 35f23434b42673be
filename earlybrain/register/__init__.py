"""Registration of a brain volume in any pose to the age-matched atlas template (ANTsPy).

`register_to_atlas` (files, the workflow's entry) and `register_images` (arrays) run a
robust orientation search (`register.init`), then rigid -> affine -> SyN, and return the
volume in atlas space, transforms both ways, atlas labels in subject space and QC metrics.
"""
