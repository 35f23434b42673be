# Cohort overview and the derivatives' dataset_description.json.


localrules:
    cohort,
    dataset_description,


rule cohort:
    """One row per session with age, kind, status and a relative link to its report."""
    input:
        stages=all_stages(),
        reports=all_reports(),
        norms=brainage_wf.norms_file(config["brainage"]),
        infant_norms=INFANT_NORMS,
    output:
        tsv=COHORT_TSV,
        html=COHORT_HTML,
    log:
        f"{LOGS}/cohort.log",
    benchmark:
        f"{BENCH}/cohort.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        **step_params("cohort"),
    shell:
        step_shell("cohort")


rule dataset_description:
    """BIDS derivatives dataset_description.json with GeneratedBy."""
    output:
        out=DATASET_DESCRIPTION,
    log:
        f"{LOGS}/dataset_description.log",
    benchmark:
        f"{BENCH}/dataset_description.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=200,
        runtime=2,
    params:
        **step_params("dataset-description", bids=BIDS),
    shell:
        step_shell("dataset-description")
