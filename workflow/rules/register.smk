# Registration of fetal reconstructions to the age-matched atlas template, and atlas
# building from a cohort (`snakemake build_atlas`, never part of `all`). The atlas
# (ATLAS_MANIFEST, ATLAS_SPACE) is resolved in common.smk; helpers that turn the config
# into paths and arguments live in earlybrain.atlas.workflow (unit-tested there).


rule build_atlas:
    """A spatiotemporal atlas (one template per week) from a cohort, by age-kernel-weighted
    groupwise registration (ANTsPy). Target it by name: `snakemake build_atlas`."""
    input:
        unpack(atlas_build_inputs),
    output:
        directory(ATLAS_BUILD.get("out") or f"{OUTDIR}/atlas"),
    log:
        f"{LOGS}/build_atlas.log",
    benchmark:
        f"{BENCH}/build_atlas.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=600,
    params:
        eb=EARLYBRAIN,
        args=atlas_build_args,
    shell:
        "{params.eb} build-atlas {params.args} --out {output:q} --threads {threads} > {log:q} 2>&1"


rule register_atlas:
    """Reconstruction -> age-matched template: robust init, rigid, affine, SyN (ANTsPy);
    the volume in atlas space, transforms both ways, atlas labels in subject space, QC."""
    input:
        volume=rules.recon.output.volume,
        mask=rules.recon.output.mask,
        atlas=ATLAS_MANIFEST,
    output:
        **atlas_wf.rule_outputs(D, ATLAS_SPACE),
    log:
        f"{LOGS}/register_atlas/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/register_atlas/{{sdir}}/{{prefix}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        **step_params(
            "register-atlas",
            age=lambda wildcards: session_of(wildcards).age_weeks,
            params=config["register"],
            out_anat=folder("anat"),
            out_xfm=folder("xfm"),
            prefix=stage_stem(RECON),
            contrast="T2w",
            vote_weights=SEGMENTATION_SETTINGS["weights"],
        ),
    shell:
        step_shell("register-atlas")


rule register_figures:
    """The reconstruction with the warped atlas labels outlined (PNG, in the report)."""
    input:
        volume=rules.recon.output.volume,
        mask=rules.recon.output.mask,
        labels=rules.register_atlas.output.dseg,
    output:
        out=D.atlas_figure(),
    log:
        f"{LOGS}/register_figures/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/register_figures/{{sdir}}/{{prefix}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        **step_params("register-figures"),
    shell:
        step_shell("register-figures")
