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
    params:
        eb=EARLYBRAIN,
        args=atlas_build_args,
    log:
        f"{LOGS}/build_atlas.log",
    benchmark:
        f"{BENCH}/build_atlas.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=600,
    conda:
        ENV
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
        **atlas_wf.rule_outputs(DERIV, "{sdir}", "{prefix}", ATLAS_SPACE),
    params:
        eb=EARLYBRAIN,
        age=lambda wildcards: session_of(wildcards).age_weeks,
        register=json.dumps(config["register"], sort_keys=True),
        anat=lambda wildcards: f"{DERIV}/{wildcards.sdir}/anat",
        xfm=lambda wildcards: f"{DERIV}/{wildcards.sdir}/xfm",
        prefix=lambda wildcards: f"{wildcards.prefix}_rec-svr",
        contrast="T2w",
    log:
        f"{LOGS}/register_atlas/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/register_atlas/{{sdir}}/{{prefix}}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    shell:
        "{params.eb} step register-atlas --volume {input.volume:q} --mask {input.mask:q}"
        " --age {params.age} --atlas {input.atlas:q} --out-anat {params.anat:q}"
        " --out-xfm {params.xfm:q} --prefix {params.prefix:q}"
        " --params {params.register:q} --contrast {params.contrast}"
        " --threads {threads} > {log:q} 2>&1"


rule register_figures:
    """The reconstruction with the warped atlas labels outlined (PNG, in the report)."""
    input:
        volume=rules.recon.output.volume,
        mask=rules.recon.output.mask,
        labels=rules.register_atlas.output.dseg,
    output:
        png=f"{DERIV}/{{sdir}}/figures/{{prefix}}_rec-svr_desc-atlas_dseg.png",
    params:
        eb=EARLYBRAIN,
    log:
        f"{LOGS}/register_figures/{{sdir}}/{{prefix}}.log",
    benchmark:
        f"{BENCH}/register_figures/{{sdir}}/{{prefix}}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    conda:
        ENV
    shell:
        "{params.eb} step register-figures --volume {input.volume:q} --mask {input.mask:q}"
        " --labels {input.labels:q} --out {output.png:q} > {log:q} 2>&1"
