# Slice-to-volume registration + super-resolution reconstruction of fetal sessions.
import json


rule recon:
    """SVR + SRR (torch): the kept bias-corrected stacks + brain masks -> isotropic volume."""
    input:
        unpack(recon_inputs),
    output:
        volume=f"{DERIV}/{{sdir}}/anat/{{prefix}}_rec-svr_T2w.nii.gz",
        volume_json=f"{DERIV}/{{sdir}}/anat/{{prefix}}_rec-svr_T2w.json",
        mask=f"{DERIV}/{{sdir}}/anat/{{prefix}}_rec-svr_desc-brain_mask.nii.gz",
        mask_json=f"{DERIV}/{{sdir}}/anat/{{prefix}}_rec-svr_desc-brain_mask.json",
        slices=f"{DERIV}/{{sdir}}/qc/{{prefix}}_rec-svr_slices.tsv",
        metrics=f"{DERIV}/{{sdir}}/qc/{{prefix}}_rec-svr_metrics.json",
    params:
        eb=EARLYBRAIN,
        recon=json.dumps(config["recon"], sort_keys=True),
        device=config["device"],
        fallback=config["device_fallback"],
    log:
        f"{LOGS}/recon/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/recon/{{sdir}}/{{prefix}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    shell:
        "{params.eb} step recon --stacks {input.stacks:q} --masks {input.masks:q}"
        " --out-volume {output.volume:q} --out-mask {output.mask:q}"
        " --out-slices {output.slices:q} --out-metrics {output.metrics:q}"
        " --stack-qc {input.stack_qc:q} --params {params.recon:q} --device {params.device}"
        " --device-fallback {params.fallback} --threads {threads} > {log:q} 2>&1"


rule recon_figures:
    """The reconstruction in three views, and per-slice motion and weights, as PNG."""
    input:
        volume=rules.recon.output.volume,
        mask=rules.recon.output.mask,
        slices=rules.recon.output.slices,
        metrics=rules.recon.output.metrics,
    output:
        views=f"{DERIV}/{{sdir}}/figures/{{prefix}}_rec-svr_views.png",
        motion=f"{DERIV}/{{sdir}}/figures/{{prefix}}_rec-svr_motion.png",
    params:
        eb=EARLYBRAIN,
    log:
        f"{LOGS}/recon_figures/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/recon_figures/{{sdir}}/{{prefix}}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        ENV
    shell:
        "{params.eb} step recon-figures --volume {input.volume:q} --mask {input.mask:q}"
        " --slices {input.slices:q} --metrics {input.metrics:q}"
        " --out-views {output.views:q} --out-motion {output.motion:q} > {log:q} 2>&1"
