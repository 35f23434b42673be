# Subject (session) report: validation, stage table, figures of every stage that ran.


rule report:
    """Self-contained HTML report; also for sessions whose validation failed."""
    input:
        unpack(report_inputs),
    output:
        html=D.report(),
        stages=D.stages(),
    log:
        f"{LOGS}/report/{{prefix}}.log",
    benchmark:
        f"{BENCH}/report/{{prefix}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        **step_params("report"),
    shell:
        step_shell("report")
