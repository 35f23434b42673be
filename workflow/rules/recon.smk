# Slice-to-volume registration + super-resolution reconstruction of fetal sessions.
rule recon:
    """SVR + SRR (torch): the kept bias-corrected stacks + brain masks -> isotropic volume."""
    input:
        unpack(recon_inputs),
    output:
        volume=D.volume(),
        volume_json=sidecar(D.volume()),
        mask=D.brain_mask(),
        mask_json=sidecar(D.brain_mask()),
        slices=D.recon_slices(),
        metrics=D.recon_metrics(),
    log:
        f"{LOGS}/recon/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/recon/{{sdir}}/{{prefix}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        **step_params(
            "recon",
            params=config["recon"],
        ),
    shell:
        step_shell("recon")


rule recon_figures:
    """The reconstruction in three views, and per-slice motion and weights, as PNG."""
    input:
        volume=rules.recon.output.volume,
        mask=rules.recon.output.mask,
        slices=rules.recon.output.slices,
        metrics=rules.recon.output.metrics,
    output:
        views=D.recon_views(),
        motion=D.recon_motion(),
    log:
        f"{LOGS}/recon_figures/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/recon_figures/{{sdir}}/{{prefix}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        **step_params("recon-figures"),
    shell:
        step_shell("recon-figures")
