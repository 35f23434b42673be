# earlybrain: fetal/infant brain MRI workflow.
#
# Stages built in this version: BIDS discovery, input validation, N4 bias-field
# correction + intensity normalisation, subject and cohort QC reports. SVR/SRR, atlas
# registration, segmentation and brain age are NOT in this version; the reports list
# them as "not yet available in this version" and no rule fakes their outputs.
#
#   snakemake --cores 2 --config bids_dir=/data/bids output_dir=/data/out
#   snakemake --profile profiles/local --config bids_dir=... output_dir=...
#   earlybrain run BIDS OUT          (wraps the above, writes the resolved config)

import os

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/cohort.smk"


rule all:
    default_target: True
    input:
        DATASET_DESCRIPTION,
        COHORT_TSV,
        COHORT_HTML,
        all_reports(),
