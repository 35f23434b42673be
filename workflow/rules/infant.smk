# Infant sessions (3D T1w and/or T2w, term to 2 years): no SVR/SRR. The N4-corrected
# image of the session's working contrast (T2w when present, or T1w from config
# infant.t1w_from_months; earlybrain.preprocess.infant) is brain-masked by the network,
# then registered to the infant atlas and segmented by the same steps as a fetal
# reconstruction: the rules below reuse the fetal ones with infant inputs and outputs.
# Its brain age has a method of its own (earlybrain.brainage.infant: atlas similarity,
# volumes under the infant norms and myelination, combined), with the fetal outputs'
# format, so the normative chart and the reports are the fetal ones.
# Derived files are named `<prefix>_mod-<contrast>_...` (fetal: `<prefix>_rec-svr_...`).


rule infant_prep:
    """Intracranial mask of an infant's N4-corrected 3D head image (segmentation network)."""
    input:
        image=infant_image,
    output:
        mask=f"{DERIV}/{{sdir}}/anat/{{prefix}}_mod-{{suffix}}_desc-brain_mask.nii.gz",
        mask_json=f"{DERIV}/{{sdir}}/anat/{{prefix}}_mod-{{suffix}}_desc-brain_mask.json",
        qc=f"{DERIV}/{{sdir}}/qc/{{prefix}}_mod-{{suffix}}_desc-masking_qc.json",
    params:
        eb=EARLYBRAIN,
        age=lambda wildcards: session_of(wildcards).age_weeks,
        weights=INFANT_SEGMENTATION_SETTINGS["weights"],
        device=config["device"],
        fallback=config["device_fallback"],
    log:
        f"{LOGS}/infant_prep/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/infant_prep/{{sdir}}/{{prefix}}_{{suffix}}.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=20,
    conda:
        ENV
    shell:
        "{params.eb} step infant-prep --image {input.image:q} --contrast {wildcards.suffix}"
        " --age {params.age} --out-mask {output.mask:q} --out-qc {output.qc:q}"
        " --weights {params.weights:q} --tta --device {params.device}"
        " --device-fallback {params.fallback} --threads {threads} > {log:q} 2>&1"


use rule register_atlas as register_infant with:
    input:
        volume=infant_image,
        mask=rules.infant_prep.output.mask,
        atlas=INFANT_MANIFEST,
    output:
        **atlas_wf.rule_outputs(
            DERIV, "{sdir}", "{prefix}", INFANT_SPACE, "mod-{suffix}", "{suffix}"
        ),
    params:
        prefix=lambda wildcards: f"{wildcards.prefix}_mod-{wildcards.suffix}",
        contrast=lambda wildcards: wildcards.suffix,
        # infant templates are months apart: allow the nearest one further away
        register=json.dumps(
            config["register"]
            | {"max_age_distance_weeks": config["infant"]["max_template_distance_weeks"]},
            sort_keys=True,
        ),
    log:
        f"{LOGS}/register_infant/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/register_infant/{{sdir}}/{{prefix}}_{{suffix}}.tsv"


use rule register_figures as register_figures_infant with:
    input:
        volume=infant_image,
        mask=rules.infant_prep.output.mask,
        labels=rules.register_infant.output.dseg,
    output:
        png=f"{DERIV}/{{sdir}}/figures/{{prefix}}_mod-{{suffix}}_desc-atlas_dseg.png",
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
        **segment_wf.rule_outputs(DERIV, "{sdir}", "{prefix}", INFANT_SPACE, "mod-{suffix}"),
    params:
        prefix=lambda wildcards: f"{wildcards.prefix}_mod-{wildcards.suffix}",
        settings=json.dumps(INFANT_SEGMENTATION_SETTINGS, sort_keys=True),
    log:
        f"{LOGS}/segment_infant/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/segment_infant/{{sdir}}/{{prefix}}_{{suffix}}.tsv"


use rule segment_figures as segment_figures_infant with:
    input:
        volume=infant_image,
        mask=rules.infant_prep.output.mask,
        labels=rules.segment_infant.output.dseg,
    output:
        png=f"{DERIV}/{{sdir}}/figures/{{prefix}}_mod-{{suffix}}_desc-segmentation_dseg.png",
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
    output:
        **brainage_wf.infant_rule_outputs(DERIV, "{sdir}", "{prefix}", "{suffix}"),
    params:
        eb=EARLYBRAIN,
        age=lambda wildcards: session_of(wildcards).age_weeks,
        anat=lambda wildcards: f"{DERIV}/{wildcards.sdir}/anat",
        prefix=lambda wildcards: f"{wildcards.prefix}_mod-{wildcards.suffix}",
    log:
        f"{LOGS}/brainage_infant/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/brainage_infant/{{sdir}}/{{prefix}}_{{suffix}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        ENV
    shell:
        "{params.eb} step infant-brainage --volume {input.volume:q} --mask {input.mask:q}"
        " --contrast {wildcards.suffix} --affine {input.affine:q}"
        " --volumes {input.volumes:q} --dseg {input.dseg:q} --age {params.age}"
        " --atlas {input.atlas:q} --norms {input.norms:q} --out-anat {params.anat:q}"
        " --prefix {params.prefix:q} > {log:q} 2>&1"


use rule brainage_figures as brainage_figures_infant with:
    input:
        brainage=rules.brainage_infant.output.brainage,
        zscores=rules.brainage_infant.output.zscores,
    output:
        png=brainage_wf.infant_figure_path(DERIV, "{sdir}", "{prefix}", "{suffix}"),
    log:
        f"{LOGS}/brainage_figures_infant/{{sdir}}/{{prefix}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/brainage_figures_infant/{{sdir}}/{{prefix}}_{{suffix}}.tsv"
