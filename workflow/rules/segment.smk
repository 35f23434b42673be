# Tissue segmentation of the registered reconstruction (3D MONAI U-Net, torch CPU/CUDA):
# labels in atlas space, pulled back to the reconstruction's grid, volumes + asymmetry.
# Training of the network: rule train_segmentation in train.smk.


rule segment:
    """Atlas-space reconstruction -> tissue labels (atlas + subject space), volumes TSV, QC."""
    input:
        volume=rules.register_atlas.output.volume,
        mask=rules.register_atlas.output.volume_mask,
        subject_volume=rules.recon.output.volume,
        affine=rules.register_atlas.output.affine,
        inverse_warp=rules.register_atlas.output.inverse_warp,
        atlas_dseg=rules.register_atlas.output.dseg,
        atlas=ATLAS_MANIFEST,
    output:
        **segment_wf.rule_outputs(D, ATLAS_SPACE),
    log:
        f"{LOGS}/segment/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/segment/{{sdir}}/{{prefix}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        **step_params(
            "segment",
            params=SEGMENTATION_SETTINGS,
            out_anat=folder("anat"),
            prefix=stage_stem(RECON),
        ),
    shell:
        step_shell("segment")


rule segment_figures:
    """The reconstruction with the network's tissue labels outlined (PNG, in the report)."""
    input:
        volume=rules.recon.output.volume,
        mask=rules.recon.output.mask,
        labels=rules.segment.output.dseg,
    output:
        out=D.segmentation_figure(),
    log:
        f"{LOGS}/segment_figures/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/segment_figures/{{sdir}}/{{prefix}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        **step_params("register-figures"),
    shell:
        step_shell("register-figures")
