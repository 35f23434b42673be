# Input validation (checkpoint), per-image N4 bias correction + normalisation, brain
# masking of fetal stacks and stack quality ranking.
import json



checkpoint validate:
    """Check one session's inputs; always succeeds, writing status pass/fail + reasons."""
    input:
        images=existing_images,
        tables=session_tables,
    output:
        json=f"{DERIV}/{{sdir}}/qc/{{prefix}}_validation.json",
    params:
        eb=EARLYBRAIN,
        bids=BIDS,
        subject=lambda wc: session_of(wc).subject,
        session=session_option,
        fetal_range=" ".join(str(v) for v in config["validation"]["fetal_ga_range"]),
        infant_range=" ".join(str(v) for v in config["validation"]["infant_pma_range"]),
        min_slices=config["validation"]["min_slices"],
        reconstructed="--reconstructed" if config["reconstructed"] else "",
    log:
        f"{LOGS}/validate/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/validate/{{sdir}}/{{prefix}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    shell:
        "{params.eb} step validate --bids {params.bids:q} --subject {params.subject:q}"
        " {params.session} --out {output.json:q}"
        " --fetal-ga-range {params.fetal_range} --infant-pma-range {params.infant_range}"
        " --min-slices {params.min_slices} {params.reconstructed} > {log:q} 2>&1"


rule n4:
    """Foreground mask (Otsu, not a brain mask), N4 bias correction, percentile scaling."""
    input:
        # Not the validation JSON: N4 jobs are only requested for validated sessions
        # (see report_inputs), and re-validating (e.g. after participants.tsv gained a
        # subject) must not redo every N4.
        image=raw_image,
    output:
        image=f"{DERIV}/{{sdir}}/anat/{{ents}}_desc-n4_{{suffix}}.nii.gz",
        image_json=f"{DERIV}/{{sdir}}/anat/{{ents}}_desc-n4_{{suffix}}.json",
        bias=f"{DERIV}/{{sdir}}/anat/{{ents}}_desc-biasfield_{{suffix}}.nii.gz",
        bias_json=f"{DERIV}/{{sdir}}/anat/{{ents}}_desc-biasfield_{{suffix}}.json",
        mask=f"{DERIV}/{{sdir}}/anat/{{ents}}_desc-foreground{{suffix}}_mask.nii.gz",
        mask_json=f"{DERIV}/{{sdir}}/anat/{{ents}}_desc-foreground{{suffix}}_mask.json",
    params:
        eb=EARLYBRAIN,
        shrink=config["preprocess"]["n4"]["shrink_factor"],
        iterations=" ".join(str(i) for i in config["preprocess"]["n4"]["iterations"]),
        tol=config["preprocess"]["n4"]["convergence_tol"],
        spline=config["preprocess"]["n4"]["spline_distance_mm"],
        sigma=config["preprocess"]["foreground"]["smoothing_sigma_mm"],
        min_fraction=config["preprocess"]["foreground"]["min_component_fraction"],
        lower=config["preprocess"]["normalise"]["lower_percentile"],
        upper=config["preprocess"]["normalise"]["upper_percentile"],
    log:
        f"{LOGS}/n4/{{sdir}}/{{ents}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/n4/{{sdir}}/{{ents}}_{{suffix}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    shell:
        "{params.eb} step n4 --input {input.image:q} --out {output.image:q}"
        " --bias {output.bias:q} --mask {output.mask:q}"
        " --shrink-factor {params.shrink} --iterations {params.iterations}"
        " --convergence-tol {params.tol} --spline-distance-mm {params.spline}"
        " --smoothing-sigma-mm {params.sigma} --min-component-fraction {params.min_fraction}"
        " --lower-percentile {params.lower} --upper-percentile {params.upper}"
        " --threads {threads} > {log:q} 2>&1"


rule n4_figures:
    """One input image: raw with N4's foreground outline / after N4 and normalisation
    (the brain mask outlined where the session has one on this grid) / bias field (PNG)."""
    input:
        raw=raw_image,
        image=rules.n4.output.image,
        bias=rules.n4.output.bias,
        foreground=rules.n4.output.mask,
        brain=image_brain_mask,
    output:
        png=f"{DERIV}/{{sdir}}/figures/{{ents}}_desc-n4_{{suffix}}.png",
    params:
        eb=EARLYBRAIN,
        brain=quoted_input("brain"),
    log:
        f"{LOGS}/n4_figures/{{sdir}}/{{ents}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/n4_figures/{{sdir}}/{{ents}}_{{suffix}}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        ENV
    shell:
        "{params.eb} step n4-figure --raw {input.raw:q} --n4 {input.image:q}"
        " --bias {input.bias:q} --foreground {input.foreground:q} --brain {params.brain}"
        " --out {output.png:q} > {log:q} 2>&1"


rule brain_mask:
    """Fetal brain mask of one stack: the 2D U-Net (torch), or the lab's own from masks_dir."""
    input:
        image=raw_image,
        precomputed=precomputed_mask,
    output:
        mask=f"{DERIV}/{{sdir}}/anat/{{ents}}_desc-brain{{suffix}}_mask.nii.gz",
        mask_json=f"{DERIV}/{{sdir}}/anat/{{ents}}_desc-brain{{suffix}}_mask.json",
    params:
        eb=EARLYBRAIN,
        precomputed=quoted_input("precomputed"),
        miss=masks_dir_miss,
        weights=MASKING_WEIGHTS,
        threshold=threshold_option(config["masking"].get("threshold")),
        min_volume=config["masking"]["min_volume_ml"],
        device=config["device"],
        fallback=config["device_fallback"],
    log:
        f"{LOGS}/brain_mask/{{sdir}}/{{ents}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/brain_mask/{{sdir}}/{{ents}}_{{suffix}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        ENV
    shell:
        "{params.eb} step brain-mask --input {input.image:q} --out {output.mask:q}"
        " --precomputed {params.precomputed} --weights {params.weights:q} {params.threshold}"
        " --min-volume-ml {params.min_volume} --device {params.device}"
        " --device-fallback {params.fallback} {params.miss} > {log:q} 2>&1"


rule stack_qc:
    """Score and rank a fetal session's stacks; exclude unusable ones with the reason."""
    input:
        unpack(stack_qc_inputs),
    output:
        tsv=f"{DERIV}/{{sdir}}/qc/{{prefix}}_desc-stackquality.tsv",
        tsv_json=f"{DERIV}/{{sdir}}/qc/{{prefix}}_desc-stackquality.json",
    params:
        eb=EARLYBRAIN,
        rules=json.dumps(config["stack_quality"], sort_keys=True),
    log:
        f"{LOGS}/stack_qc/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/stack_qc/{{sdir}}/{{prefix}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "{params.eb} step stack-qc --stacks {input.stacks:q} --masks {input.masks:q}"
        " --out-tsv {output.tsv:q} --rules {params.rules:q} > {log:q} 2>&1"
