# Infant sessions (3D T1w and/or T2w, term to 2 years): no SVR/SRR. The N4-corrected
# image of the session's working contrast (T2w when present, or T1w from config
# infant.t1w_from_months; earlybrain.preprocess.infant) is brain-masked (by the network,
# or by its own non-zero region when it came skull-stripped),
# then registered to the infant atlas and segmented by the same steps as a fetal
# reconstruction: the rules below reuse the fetal ones with infant inputs and outputs.
# Its brain age has a method of its own (earlybrain.brainage.infant: atlas similarity,
# volumes under the infant norms and myelination, combined), with the fetal outputs'
# format, so the normative chart and the reports are the fetal ones.
# Derived files are named `<prefix>_mod-<contrast>_...` (fetal: `<prefix>_rec-svr_...`).

INFANT = "mod-{suffix}"  # the stage entity of an infant's image (earlybrain.io.paths)


rule infant_prep:
    """Intracranial mask of an infant's N4-corrected 3D image: its own non-zero region when
    it came skull-stripped, else the segmentation network's."""
    input:
        raw=infant_raw,
        image=infant_image,
    output:
        mask=D.brain_mask(INFANT),
        mask_json=sidecar(D.brain_mask(INFANT)),
        qc=D.masking_qc(INFANT),
    log:
        f"{LOGS}/infant_prep/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/infant_prep/{{sdir}}/{{prefix}}_{{suffix}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=6000,
        runtime=20,
    params:
        **step_params(
            "infant-prep",
            contrast=lambda wildcards: wildcards.suffix,
            age=lambda wildcards: session_of(wildcards).age_weeks,
            weights=INFANT_SEGMENTATION_SETTINGS["weights"],
            tta=True,
        ),
    shell:
        step_shell("infant-prep")


use rule register_atlas as register_infant with:
    input:
        volume=infant_image,
        mask=rules.infant_prep.output.mask,
        atlas=INFANT_MANIFEST,
    output:
        **atlas_wf.rule_outputs(D, INFANT_SPACE, INFANT, "{suffix}"),
    log:
        f"{LOGS}/register_infant/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/register_infant/{{sdir}}/{{prefix}}_{{suffix}}.tsv"
    params:
        **step_overrides(
            "register-atlas",
            prefix=stage_stem(INFANT),
            contrast=lambda wildcards: wildcards.suffix,
            # infant templates are months apart: allow the nearest one further away
            params=config["register"]
            | {"max_age_distance_weeks": config["infant"]["max_template_distance_weeks"]},
        ),


use rule register_figures as register_figures_infant with:
    input:
        volume=infant_image,
        mask=rules.infant_prep.output.mask,
        labels=rules.register_infant.output.dseg,
    output:
        out=D.atlas_figure(INFANT),
    log:
        f"{LOGS}/register_figures_infant/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/register_figures_infant/{{sdir}}/{{prefix}}_{{suffix}}.tsv"


use rule segment as segment_infant with:
    input:
        volume=rules.register_infant.output.volume,
        mask=rules.register_infant.output.volume_mask,
        subject_volume=infant_image,
        affine=rules.register_infant.output.affine,
        inverse_warp=rules.register_infant.output.inverse_warp,
        atlas_dseg=rules.register_infant.output.dseg,
        atlas=INFANT_MANIFEST,
    output:
        **segment_wf.rule_outputs(D, INFANT_SPACE, INFANT),
    log:
        f"{LOGS}/segment_infant/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/segment_infant/{{sdir}}/{{prefix}}_{{suffix}}.tsv"
    params:
        **step_overrides(
            "segment",
            prefix=stage_stem(INFANT),
            params=INFANT_SEGMENTATION_SETTINGS,
        ),


use rule segment_figures as segment_figures_infant with:
    input:
        volume=infant_image,
        mask=rules.infant_prep.output.mask,
        labels=rules.segment_infant.output.dseg,
    output:
        out=D.segmentation_figure(INFANT),
    log:
        f"{LOGS}/segment_figures_infant/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/segment_figures_infant/{{sdir}}/{{prefix}}_{{suffix}}.tsv"


rule brainage_infant:
    """Infant image + registration + segmentation -> desc-brainage.json and desc-zscores.tsv."""
    input:
        volume=infant_image,
        mask=rules.infant_prep.output.mask,
        affine=rules.register_infant.output.affine,
        volumes=rules.segment_infant.output.volumes,
        dseg=rules.segment_infant.output.dseg,
        atlas=INFANT_MANIFEST,
        norms=INFANT_NORMS,
        mask_qc=rules.infant_prep.output.qc,
    output:
        **brainage_wf.rule_outputs(D, INFANT),
    log:
        f"{LOGS}/brainage_infant/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/brainage_infant/{{sdir}}/{{prefix}}_{{suffix}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        **step_params(
            "infant-brainage",
            contrast=lambda wildcards: wildcards.suffix,
            age=lambda wildcards: session_of(wildcards).age_weeks,
            out_anat=folder("anat"),
            prefix=stage_stem(INFANT),
        ),
    shell:
        step_shell("infant-brainage")


use rule brainage_figures as brainage_figures_infant with:
    input:
        brainage=rules.brainage_infant.output.brainage,
        zscores=rules.brainage_infant.output.zscores,
    output:
        out=D.brainage_chart(INFANT),
    log:
        f"{LOGS}/brainage_figures_infant/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/brainage_figures_infant/{{sdir}}/{{prefix}}_{{suffix}}.tsv"
