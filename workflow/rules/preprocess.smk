# Input validation (checkpoint), per-image N4 bias correction + normalisation, brain
# masking of fetal stacks and stack quality ranking.


checkpoint validate:
    """Check one session's inputs; always succeeds, writing status pass/fail + reasons."""
    input:
        images=existing_images,
        tables=session_tables,
    output:
        out=D.validation(),
    log:
        f"{LOGS}/validate/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/validate/{{sdir}}/{{prefix}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        **step_params(
            "validate",
            bids=BIDS,
            subject=lambda wc: session_of(wc).subject,
            session=lambda wc: session_of(wc).session,
            fetal_ga_range=config["validation"]["fetal_ga_range"],
            infant_pma_range=config["validation"]["infant_pma_range"],
            min_slices=config["validation"]["min_slices"],
            reconstructed=config["reconstructed"],
        ),
    shell:
        step_shell("validate")


rule n4:
    """Foreground mask (Otsu, not a brain mask), N4 bias correction, percentile scaling."""
    input:
        # Not the validation JSON: N4 jobs are only requested for validated sessions
        # (see report_inputs), and re-validating (e.g. after participants.tsv gained a
        # subject) must not redo every N4.
        image=raw_image,
    output:
        out=D.n4(),
        out_json=sidecar(D.n4()),
        bias=D.bias(),
        bias_json=sidecar(D.bias()),
        mask=D.foreground(),
        mask_json=sidecar(D.foreground()),
    log:
        f"{LOGS}/n4/{{sdir}}/{{ents}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/n4/{{sdir}}/{{ents}}_{{suffix}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        **step_params("n4", params=config["preprocess"]),
    shell:
        step_shell("n4")


rule n4_figures:
    """One input image: raw with N4's foreground outline / after N4 and normalisation
    (the brain mask outlined where the session has one on this grid) / bias field (PNG)."""
    input:
        raw=raw_image,
        n4=rules.n4.output.out,
        bias=rules.n4.output.bias,
        foreground=rules.n4.output.mask,
        brain=image_brain_mask,
    output:
        out=D.n4_figure(),
    log:
        f"{LOGS}/n4_figures/{{sdir}}/{{ents}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/n4_figures/{{sdir}}/{{ents}}_{{suffix}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        **step_params("n4-figure"),
    shell:
        step_shell("n4-figure")


rule brain_mask:
    """Fetal brain mask of one stack: the 2D U-Net (torch), or the lab's own from masks_dir."""
    input:
        image=raw_image,
        precomputed=precomputed_mask,
    output:
        out=D.stack_mask(),
        out_json=sidecar(D.stack_mask()),
    log:
        f"{LOGS}/brain_mask/{{sdir}}/{{ents}}_{{suffix}}.log",
    benchmark:
        f"{BENCH}/brain_mask/{{sdir}}/{{ents}}_{{suffix}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        **step_params(
            "brain-mask",
            weights=MASKING_WEIGHTS,
            threshold=config["masking"].get("threshold"),
            min_volume_ml=config["masking"]["min_volume_ml"],
            masks_dir_miss=masks_dir_miss,
        ),
    shell:
        step_shell("brain-mask")


rule stack_qc:
    """Score and rank a fetal session's stacks; exclude unusable ones with the reason."""
    input:
        unpack(stack_qc_inputs),
    output:
        out_tsv=D.stack_quality(),
        out_json=sidecar(D.stack_quality()),
    log:
        f"{LOGS}/stack_qc/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/stack_qc/{{sdir}}/{{prefix}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **step_params("stack-qc", params=config["stack_quality"]),
    shell:
        step_shell("stack-qc")
