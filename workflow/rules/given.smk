# Fetal sessions that bring their own 3D reconstruction (SVRTK, NiftyMIC, NeSVoR): no
# stack masking, stack QC or SVR/SRR. The N4-corrected volume is brain-masked (its own
# non-zero region when it came brain-extracted, else the segmentation network;
# earlybrain.preprocess.given_recon), then registered to the fetal atlas, segmented and
# aged by the fetal rules, reused with these inputs. Derived files are named
# `<prefix>_rec-<label>_...` after the file's own rec entity (`given` without one); the
# label `svr` is earlybrain's own reconstruction and refused by validation.


GIVEN = "rec-{given}"  # the stage entity of a given reconstruction (earlybrain.io.paths)


wildcard_constraints:
    # never `svr`: those paths belong to the rules of earlybrain's own reconstruction
    given=r"(?!svr(?![A-Za-z0-9]))[A-Za-z0-9]+",


rule given_recon_mask:
    """Brain mask of a reconstruction made outside earlybrain."""
    input:
        raw=given_raw,
        image=given_image,
    output:
        mask=D.brain_mask(GIVEN),
        mask_json=sidecar(D.brain_mask(GIVEN)),
        qc=D.masking_qc(GIVEN),
    log:
        f"{LOGS}/given_recon_mask/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/given_recon_mask/{{sdir}}/{{prefix}}_{{given}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=6000,
        runtime=20,
    params:
        **step_params(
            "given-mask",
            weights=SEGMENTATION_SETTINGS["weights"],
        ),
    shell:
        step_shell("given-mask")


use rule register_atlas as register_given with:
    input:
        volume=given_image,
        mask=rules.given_recon_mask.output.mask,
        atlas=ATLAS_MANIFEST,
    output:
        **atlas_wf.rule_outputs(D, ATLAS_SPACE, GIVEN),
    log:
        f"{LOGS}/register_given/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/register_given/{{sdir}}/{{prefix}}_{{given}}.tsv"
    params:
        **step_overrides("register-atlas", prefix=stage_stem(GIVEN)),


use rule register_figures as register_figures_given with:
    input:
        volume=given_image,
        mask=rules.given_recon_mask.output.mask,
        labels=rules.register_given.output.dseg,
    output:
        out=D.atlas_figure(GIVEN),
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
        **segment_wf.rule_outputs(D, ATLAS_SPACE, GIVEN),
    log:
        f"{LOGS}/segment_given/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/segment_given/{{sdir}}/{{prefix}}_{{given}}.tsv"
    params:
        **step_overrides("segment", prefix=stage_stem(GIVEN)),


use rule segment_figures as segment_figures_given with:
    input:
        volume=given_image,
        mask=rules.given_recon_mask.output.mask,
        labels=rules.segment_given.output.dseg,
    output:
        out=D.segmentation_figure(GIVEN),
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
        **brainage_wf.rule_outputs(D, GIVEN),
    log:
        f"{LOGS}/brainage_given/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/brainage_given/{{sdir}}/{{prefix}}_{{given}}.tsv"
    params:
        **step_overrides("brainage", prefix=stage_stem(GIVEN)),


use rule brainage_figures as brainage_figures_given with:
    input:
        brainage=rules.brainage_given.output.brainage,
        zscores=rules.brainage_given.output.zscores,
    output:
        out=D.brainage_chart(GIVEN),
    log:
        f"{LOGS}/brainage_figures_given/{{sdir}}/{{prefix}}_{{given}}.log",
    benchmark:
        f"{BENCH}/brainage_figures_given/{{sdir}}/{{prefix}}_{{given}}.tsv"
