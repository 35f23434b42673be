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
        **segment_wf.rule_outputs(DERIV, "{sdir}", "{prefix}", ATLAS_SPACE),
    params:
        eb=EARLYBRAIN,
        settings=json.dumps(SEGMENTATION_SETTINGS, sort_keys=True),
        anat=lambda wildcards: f"{DERIV}/{wildcards.sdir}/anat",
        prefix=lambda wildcards: f"{wildcards.prefix}_rec-svr",
        device=config["device"],
        fallback=config["device_fallback"],
    log:
        f"{LOGS}/segment/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/segment/{{sdir}}/{{prefix}}.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=30,
    conda:
        ENV
    shell:
        "{params.eb} step segment --volume {input.volume:q} --mask {input.mask:q}"
        " --subject-volume {input.subject_volume:q} --affine {input.affine:q}"
        " --inverse-warp {input.inverse_warp:q} --atlas {input.atlas:q}"
        " --atlas-dseg {input.atlas_dseg:q} --out-anat {params.anat:q}"
        " --prefix {params.prefix:q} --settings {params.settings:q}"
        " --device {params.device} --device-fallback {params.fallback}"
        " --threads {threads} > {log:q} 2>&1"


rule segment_figures:
    """The reconstruction with the network's tissue labels outlined (PNG, in the report)."""
    input:
        volume=rules.recon.output.volume,
        mask=rules.recon.output.mask,
        labels=rules.segment.output.dseg,
    output:
        png=f"{DERIV}/{{sdir}}/figures/{{prefix}}_rec-svr_desc-segmentation_dseg.png",
    params:
        eb=EARLYBRAIN,
    log:
        f"{LOGS}/segment_figures/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/segment_figures/{{sdir}}/{{prefix}}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        ENV
    shell:
        "{params.eb} step register-figures --volume {input.volume:q} --mask {input.mask:q}"
        " --labels {input.labels:q} --out {output.png:q} > {log:q} 2>&1"
