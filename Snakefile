# earlybrain: fetal/infant brain MRI workflow.
#
# Stages built in this version: BIDS discovery, input validation, N4 bias-field
# correction + intensity normalisation, fetal brain masking (network, or masks_dir),
# stack quality ranking, SVR/SRR, registration to the age-matched atlas template,
# tissue segmentation with volumes and asymmetry, brain age with normative z-scores
# (fetal: deep ensemble; infants: rule brainage_infant),
# subject and cohort QC reports; on demand: build_atlas, train_masking,
# train_segmentation, train_brainage, fit_norms. When a job fails, `onerror` still
# writes a report for the session it belonged to and the cohort table
# (earlybrain.report.salvage).
#
#   snakemake --cores 2 --config bids_dir=/data/bids output_dir=/data/out
#   snakemake --profile profiles/local --config bids_dir=... output_dir=...
#   earlybrain run BIDS OUT          (wraps the above, writes the resolved config)

import os

from snakemake.utils import min_version

from earlybrain.config_schema import complete_config

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


# every default, from the schema or the dataclass that takes the key; unknown keys,
# wrong types and out-of-range values stop the run here, naming the key
complete_config(config)


include: "workflow/rules/common.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/recon.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/brainage.smk"
include: "workflow/rules/infant.smk"
include: "workflow/rules/given.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/train.smk"


rule all:
    default_target: True
    input:
        DATASET_DESCRIPTION,
        COHORT_TSV,
        COHORT_HTML,
        all_reports(),
        # the stage JSONs too: a report salvaged after a failed job has none, so the next
        # run re-runs that report (and the failed job) (earlybrain.report.salvage)
        all_stages(),


onerror:
    salvage_reports(log)
