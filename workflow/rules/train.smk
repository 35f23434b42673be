# Training of the networks the pipeline ships (run on demand, never part of `all`).
#
#   snakemake train_masking --cores 2                       # writes <output_dir>/models/masking
#   snakemake train_masking --cores 2 --config masking='{train: {out_dir: models/masking}}'
#   snakemake train_segmentation --cores 2                  # <output_dir>/models/segmentation
#
# Then point masking.weights at <out_dir>/unet2d_weights.pt (empty = the shipped weights),
# or segmentation.weights at <out_dir>/unet3d_weights.pt. Fine-tuning on a lab's own label
# maps: segmentation.train.label_maps + init_weights (docs/reference/configuration.md).
# Seeded: the same seed and device give the same weights. CPU by default, CUDA when the
# job has a GPU (device: auto), so a GPU profile may send it to the GPU partition.

MASKING_TRAIN = config["masking"]["train"]
MASKING_TRAIN_OUT = MASKING_TRAIN.get("out_dir") or f"{OUTDIR}/models/masking"


rule train_masking:
    """Simulate clinical fetal stacks, train the masking networks (localiser, segmenter), write card.json."""
    output:
        weights=f"{MASKING_TRAIN_OUT}/unet2d_weights.pt",
        card=f"{MASKING_TRAIN_OUT}/card.json",
    log:
        f"{LOGS}/train_masking.log",
    benchmark:
        f"{BENCH}/train_masking.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=6000,
        runtime=240,
    params:
        eb=EARLYBRAIN,
        out=lambda wildcards, output: str(Path(output.weights).parent),
        seed=MASKING_TRAIN["seed"],
        subjects=MASKING_TRAIN["subjects"],
        localiser_steps=MASKING_TRAIN["localiser_steps"],
        segmenter_steps=MASKING_TRAIN["segmenter_steps"],
        val_subjects=MASKING_TRAIN["val_subjects"],
        batch_size=MASKING_TRAIN["batch_size"],
        device=config["device"],
    shell:
        "{params.eb} train-masking --out {params.out:q}"
        " --seed {params.seed} --subjects {params.subjects} --val-subjects {params.val_subjects}"
        " --localiser-steps {params.localiser_steps} --segmenter-steps {params.segmenter_steps}"
        " --batch-size {params.batch_size}"
        " --device {params.device} --workers {threads} --threads 1 > {log:q} 2>&1"


SEGMENTATION_TRAIN = config["segmentation"]["train"]
SEGMENTATION_TRAIN_OUT = SEGMENTATION_TRAIN.get("out_dir") or f"{OUTDIR}/models/segmentation"


rule train_segmentation:
    """Simulate label maps, train the 3D U-Net on synthetic images drawn from them
    (random contrast per label), write card.json."""
    input:
        atlas=[ATLAS_MANIFEST] if SEGMENTATION_TRAIN["use_atlas"] else [],
        label_maps=SEGMENTATION_TRAIN["label_maps"],
        init=[SEGMENTATION_TRAIN["init_weights"]] if SEGMENTATION_TRAIN["init_weights"] else [],
    output:
        weights=f"{SEGMENTATION_TRAIN_OUT}/unet3d_weights.pt",
        card=f"{SEGMENTATION_TRAIN_OUT}/card.json",
    log:
        f"{LOGS}/train_segmentation.log",
    benchmark:
        f"{BENCH}/train_segmentation.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        eb=EARLYBRAIN,
        out=lambda wildcards, output: str(Path(output.weights).parent),
        seed=SEGMENTATION_TRAIN["seed"],
        epochs=SEGMENTATION_TRAIN["epochs"],
        steps=SEGMENTATION_TRAIN["steps_per_epoch"],
        batch_size=SEGMENTATION_TRAIN["batch_size"],
        subjects=SEGMENTATION_TRAIN["subjects"],
        val_subjects=SEGMENTATION_TRAIN["val_subjects"],
        infant_subjects=SEGMENTATION_TRAIN["infant_subjects"],
        scheme=SEGMENTATION_TRAIN["label_scheme"],
        real="--real-anatomy" if SEGMENTATION_TRAIN["real_anatomy"] else "",
        optional=segment_wf.train_options,
        prior=(
            f"--p-t2-prior {SEGMENTATION_TRAIN['p_t2_prior']}"
            if SEGMENTATION_TRAIN["p_t2_prior"] is not None
            else ""
        ),
        device=config["device"],
    shell:
        "{params.eb} train-segmentation --out {params.out:q} --seed {params.seed}"
        " --epochs {params.epochs} --steps-per-epoch {params.steps}"
        " --batch-size {params.batch_size}"
        " --subjects {params.subjects} --val-subjects {params.val_subjects}"
        " --infant-subjects {params.infant_subjects}"
        " --label-scheme {params.scheme} {params.real} {params.optional} {params.prior}"
        " --device {params.device}"
        " --workers {threads} --threads {threads} > {log:q} 2>&1"


BRAINAGE_TRAIN = config["brainage"]["train"]
BRAINAGE_TRAIN_OUT = BRAINAGE_TRAIN.get("out_dir") or f"{OUTDIR}/models/brainage"
# a lab's own sessions with their ages from participants.tsv/sessions.tsv (use_cohort)
BRAINAGE_COHORT = (
    brainage_wf.selected(SESSIONS, BRAINAGE_TRAIN["cohort_subjects"])
    if BRAINAGE_TRAIN["use_cohort"]
    else []
)


rule train_brainage:
    """Train the brain-age deep ensemble on simulated fetuses (and this run's sessions
    with their ages, use_cohort), validate it, write card.json."""
    input:
        volumes=[derivatives(r).volume() for r in BRAINAGE_COHORT],
        masks=[derivatives(r).brain_mask() for r in BRAINAGE_COHORT],
        affines=[registration_outputs(r)["affine"] for r in BRAINAGE_COHORT],
    output:
        weights=f"{BRAINAGE_TRAIN_OUT}/ensemble_weights.pt",
        card=f"{BRAINAGE_TRAIN_OUT}/card.json",
    log:
        f"{LOGS}/train_brainage.log",
    benchmark:
        f"{BENCH}/train_brainage.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        eb=EARLYBRAIN,
        out=lambda wildcards, output: str(Path(output.weights).parent),
        seed=BRAINAGE_TRAIN["seed"],
        members=BRAINAGE_TRAIN["members"],
        steps=BRAINAGE_TRAIN["steps"],
        batch_size=BRAINAGE_TRAIN["batch_size"],
        subjects=BRAINAGE_TRAIN["subjects"],
        val_subjects=BRAINAGE_TRAIN["val_subjects"],
        cohort=lambda wildcards, input: brainage_wf.cohort_options(
            input.volumes, input.masks, input.affines, [r.age_weeks for r in BRAINAGE_COHORT]
        ),
        simulated="" if BRAINAGE_TRAIN["simulated"] else "--no-simulated",
        device=config["device"],
    shell:
        "{params.eb} train-brainage --out {params.out:q} --seed {params.seed}"
        " --members {params.members} --steps {params.steps} --subjects {params.subjects}"
        " --batch-size {params.batch_size}"
        " --val-subjects {params.val_subjects} {params.cohort} {params.simulated}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"


NORMS_FIT = config["brainage"]["fit_norms"]
NORMS_COHORT = brainage_wf.selected(SESSIONS, NORMS_FIT["subjects"])


rule fit_norms:
    """Normative growth curves of every volume, refitted on this run's sessions (e.g. a
    lab's healthy controls: fit_norms.subjects); point brainage.norms at the result."""
    input:
        volumes=[segmentation_outputs(r)["volumes"] for r in NORMS_COHORT],
    output:
        norms=NORMS_FIT.get("out") or f"{OUTDIR}/models/brainage/norms.json",
    log:
        f"{LOGS}/fit_norms.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        eb=EARLYBRAIN,
        ages=" ".join(f"{r.age_weeks:g}" for r in NORMS_COHORT),
        source=f"refitted on {len(NORMS_COHORT)} sessions of {BIDS}",
    shell:
        "{params.eb} fit-norms --volumes {input.volumes:q} --ages {params.ages}"
        " --source {params.source:q} --out {output.norms:q} > {log:q} 2>&1"
