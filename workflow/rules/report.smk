# Subject (session) report: validation, stage table, figures of every stage that ran.


rule report:
    """Self-contained HTML report; also for sessions whose validation failed."""
    input:
        unpack(report_inputs),
    output:
        html=f"{DERIV}/{{prefix}}.html",
        stages=f"{DERIV}/group/stages/{{prefix}}_stages.json",
    params:
        eb=EARLYBRAIN,
        validation=quoted_input("validation"),
        n4=quoted_input("n4"),
        bias=quoted_input("bias"),
        mask=quoted_input("mask"),
        n4_figures=quoted_input("n4_figures"),
        brain_masks=quoted_input("brain_masks"),
        stack_qc=quoted_input("stack_qc"),
        registration_qc=quoted_input("registration_qc"),
        registration_figure=quoted_input("registration_figure"),
        segmentation_qc=quoted_input("segmentation_qc"),
        volumes=quoted_input("volumes"),
        segmentation_figure=quoted_input("segmentation_figure"),
        brainage=quoted_input("brainage"),
        zscores=quoted_input("zscores"),
        brainage_figure=quoted_input("brainage_figure"),
        recon_metrics=quoted_input("recon_metrics"),
        recon_figures=quoted_input("recon_figures"),
    log:
        f"{LOGS}/report/{{prefix}}.log",
    benchmark:
        f"{BENCH}/report/{{prefix}}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        ENV
    shell:
        "{params.eb} step report --validation {params.validation}"
        " --n4 {params.n4} --bias {params.bias} --mask {params.mask}"
        " --n4-figures {params.n4_figures}"
        " --brain-masks {params.brain_masks} --recon-metrics {params.recon_metrics}"
        " --recon-figures {params.recon_figures} --stack-qc {params.stack_qc}"
        " --registration-qc {params.registration_qc}"
        " --registration-figure {params.registration_figure}"
        " --segmentation-qc {params.segmentation_qc} --volumes {params.volumes}"
        " --segmentation-figure {params.segmentation_figure}"
        " --brainage {params.brainage} --zscores {params.zscores}"
        " --brainage-figure {params.brainage_figure}"
        " --out-html {output.html:q} --out-stages {output.stages:q} > {log:q} 2>&1"
