# Brain age of each fetal reconstruction (deep ensemble + atlas similarity + volumes)
# and normative z-scores of its volumes; a normative chart per session for the report.
# Training of the ensemble and refitting of the norms: rules train_brainage and
# fit_norms in train.smk.


rule brainage:
    """Reconstruction + registration + volumes -> desc-brainage.json and desc-zscores.tsv."""
    input:
        volume=rules.recon.output.volume,
        mask=rules.recon.output.mask,
        affine=rules.register_atlas.output.affine,
        volumes=rules.segment.output.volumes,
        atlas=ATLAS_MANIFEST,
        models=brainage_wf.model_files(config["brainage"]),
    output:
        **brainage_wf.rule_outputs(D),
    log:
        f"{LOGS}/brainage/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/brainage/{{sdir}}/{{prefix}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        **step_params(
            "brainage",
            age=lambda wildcards: session_of(wildcards).age_weeks,
            params=BRAINAGE_SETTINGS,
            out_anat=folder("anat"),
            prefix=stage_stem(RECON),
        ),
    shell:
        step_shell("brainage")


rule brainage_figures:
    """Volumes on their normative centile curves and brain age vs age (PNG, in the report)."""
    input:
        brainage=rules.brainage.output.brainage,
        zscores=rules.brainage.output.zscores,
    output:
        out=D.brainage_chart(),
    log:
        f"{LOGS}/brainage_figures/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/brainage_figures/{{sdir}}/{{prefix}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        **step_params("brainage-figures"),
    shell:
        step_shell("brainage-figures")
