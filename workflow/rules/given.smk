# Fetal sessions that bring their own 3D reconstruction (SVRTK, NiftyMIC, NeSVoR): no
# stack masking, stack QC or SVR/SRR. The N4-corrected volume is brain-masked (its own
# non-zero region when it came brain-extracted, else the segmentation network;
# earlybrain.preprocess.given_recon), then registered to the fetal atlas, segmented and
# aged by the fetal rules, reused with these inputs. Derived files are named
# `<prefix>_rec-<label>_...` after the file's own rec entity (`given` without one); the
# label `svr` is earlybrain's own reconstruction and refused by validation.


wildcard_constraints:
    # never `svr`: those paths belong to the rules of earlybrain's own reconstruction
    given=r"(?!svr(?![A-Za-z0-9]))[A-Za-z0-9]+",


rule given_recon_mask:
    """Brain mask of a reconstruction made outside earlybrain."""
    input:
        raw=given_raw,
        image=given_image,
    output:
        mask=f"{DERIV}/{{sdir}}/anat/{{prefix}}_rec-{{given}}_desc-brain_mask.nii.gz",
        mask_json=f"{DERIV}/{{sdir}}/anat/{{prefix}}_rec-{{given}}_desc-brain_mask.json",
        qc=f"{DERIV}/{{sdir}}/qc/{{prefix}}_rec-{{given}}_desc-masking_qc.json",
    params:
        eb=EARLYBRAIN,
        weights=SEGMENTATION_SETTINGS["weights"],
        device=config["device"],
        fallback=config["device_fallback"],
    log:
        f"{LOGS}/given_recon_mask/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/given_recon_mask/{{sdir}}/{{prefix}}_{{given}}.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=20,
    conda:
        ENV
    shell:
        "{params.eb} step given-mask --raw {input.raw:q} --image {input.image:q}"
        " --out-mask {output.mask:q} --out-qc {output.qc:q} --weights {params.weights:q}"
        " --device {params.device} --device-fallback {params.fallback}"
        " --threads {threads} > {log:q} 2>&1"


use rule register_atlas as register_given with:
    input:
        volume=given_image,
        mask=rules.given_recon_mask.output.mask,
        atlas=ATLAS_MANIFEST,
    output:
        **atlas_wf.rule_outputs(DERIV, "{sdir}", "{prefix}", ATLAS_SPACE, "rec-{given}"),
    params:
        prefix=lambda wildcards: f"{wildcards.prefix}_rec-{wildcards.given}",
    log:
        f"{LOGS}/register_given/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/register_given/{{sdir}}/{{prefix}}_{{given}}.tsv"


use rule register_figures as register_figures_given with:
    input:
        volume=given_image,
        mask=rules.given_recon_mask.output.mask,
        labels=rules.register_given.output.dseg,
    output:
        png=f"{DERIV}/{{sdir}}/figures/{{prefix}}_rec-{{given}}_desc-atlas_dseg.png",
    log:
        f"{LOGS}/register_figures_given/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/register_figures_given/{{sdir}}/{{prefix}}_{{given}}.tsv"


use rule segment as segment_given with:
    input:
        volume=rules.register_given.output.volume,
        mask=rules.register_given.output.volume_mask,
        subject_volume=given_image,
        affine=rules.register_given.output.affine,
        inverse_warp=rules.register_given.output.inverse_warp,
        atlas_dseg=rules.register_given.output.dseg,
        atlas=ATLAS_MANIFEST,
    output:
        **segment_wf.rule_outputs(DERIV, "{sdir}", "{prefix}", ATLAS_SPACE, "rec-{given}"),
    params:
        prefix=lambda wildcards: f"{wildcards.prefix}_rec-{wildcards.given}",
    log:
        f"{LOGS}/segment_given/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/segment_given/{{sdir}}/{{prefix}}_{{given}}.tsv"


use rule segment_figures as segment_figures_given with:
    input:
        volume=given_image,
        mask=rules.given_recon_mask.output.mask,
        labels=rules.segment_given.output.dseg,
    output:
        png=f"{DERIV}/{{sdir}}/figures/{{prefix}}_rec-{{given}}_desc-segmentation_dseg.png",
    log:
        f"{LOGS}/segment_figures_given/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/segment_figures_given/{{sdir}}/{{prefix}}_{{given}}.tsv"


use rule brainage as brainage_given with:
    input:
        volume=given_image,
        mask=rules.given_recon_mask.output.mask,
        affine=rules.register_given.output.affine,
        volumes=rules.segment_given.output.volumes,
        atlas=ATLAS_MANIFEST,
        models=brainage_wf.model_files(config["brainage"]),
    output:
        **brainage_wf.rule_outputs(DERIV, "{sdir}", "{prefix}", "rec-{given}"),
    params:
        prefix=lambda wildcards: f"{wildcards.prefix}_rec-{wildcards.given}",
    log:
        f"{LOGS}/brainage_given/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/brainage_given/{{sdir}}/{{prefix}}_{{given}}.tsv"


use rule brainage_figures as brainage_figures_given with:
    input:
        brainage=rules.brainage_given.output.brainage,
        zscores=rules.brainage_given.output.zscores,
    output:
        png=brainage_wf.figure_path(DERIV, "{sdir}", "{prefix}", "rec-{given}"),
    log:
        f"{LOGS}/brainage_figures_given/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/brainage_figures_given/{{sdir}}/{{prefix}}_{{given}}.tsv"
