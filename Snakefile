# lossbench: download data -> train each (track, dataset, method, seed) -> evaluate -> aggregate
# -> tables and plots -> static report. `snakemake --cores N` runs the offline smoke profile
# (config/smoke.yaml, workflow profile profiles/default); see README for the full and SLURM runs.

# A profile given with --configfile stands alone: merged into the smoke profile it would also
# inherit the smoke profile's tracks.
if not workflow.overwrite_configfiles:

    configfile: "config/smoke.yaml"


include: "workflows/common.smk"
include: "workflows/resources.smk"
include: "workflows/data.smk"
include: "workflows/preference.smk"
include: "workflows/lm_pretraining.smk"
include: "workflows/classification.smk"
include: "workflows/kernels.smk"
include: "workflows/tuning.smk"
include: "workflows/together.smk"
include: "workflows/train.smk"
include: "workflows/evaluate.smk"
include: "workflows/report.smk"


rule all:
    default_target: True
    input:
        f"results/{PROFILE}/report/index.html",


# How many runs failed and how to retry them, as the very last lines (after Snakemake's own summary).
onsuccess:
    report_failed_runs(PROFILE)


onerror:
    report_failed_runs(PROFILE)
