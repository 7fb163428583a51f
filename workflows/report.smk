import glob

rule aggregate_results:
    input:
        # every file aggregate reads: a missing one makes Snakemake rebuild it (and its run)
        metrics=lambda wc: [f"{d}/metrics.csv" for d in run_dirs(wc.profile)],
        per_class=lambda wc: [f"{d}/per_class.csv" for d in run_dirs(wc.profile)],
        curves=lambda wc: [f"{d}/curves.csv" for d in run_dirs(wc.profile)],
        runs=lambda wc: [f"{d}/run.json" for d in run_dirs(wc.profile)],
    output:
        summary="results/{profile}/summary.csv",
        curves="results/{profile}/curves.csv",
        per_class="results/{profile}/per_class.csv",
        runs="results/{profile}/runs.json",
        methods="results/{profile}/methods.json",
        provenance="results/{profile}/provenance.json",
        manifest="results/{profile}/SHA256SUMS",  # the tables' sha256 (lossbench verify)
    log:
        "results/{profile}/logs/aggregate_results.log",
    run:
        from lossbench import runner

        prov = runner.provenance(config, TRACKS, " ".join(["snakemake"] + sys.argv[1:]), RUNS)
        runner.aggregate(run_dirs(wildcards.profile), os.path.dirname(output.summary), prov)


rule build_report:
    input:
        rules.aggregate_results.output,
        rules.aggregate_kernels.output if BENCHES else [],
        lambda wc: [f"results/{wc.profile}/overopt.csv"] if overopt_tables(wc.profile) else [],
    output:
        "results/{profile}/report/index.html",
    log:
        "results/{profile}/logs/build_report.log",
    run:
        from lossbench.report.build import build_report

        build_report(f"results/{wildcards.profile}", os.path.dirname(output[0]), title=f"lossbench — {wildcards.profile} profile")


# The published leaderboard: committed tidy results from full runs, rendered by the same builder.
# `snakemake results/published/<name>/report/index.html`. A set's tables are gzipped (summary.csv.gz),
# or plain in one published before publish compressed them: lbio.tidy_path takes either.
rule build_published_report:
    input:
        lambda wc: str(lbio.tidy_path(f"results/published/{wc.name}", "summary.csv")),
    output:
        "results/published/{name}/report/index.html",
    log:
        "results/logs/build_published_report/{name}.log",
    run:
        from lossbench.report.build import build_report

        build_report(f"results/published/{wildcards.name}", os.path.dirname(output[0]), title=f"lossbench — published: {wildcards.name}")


# The published leaderboard site (every set, per-track leaderboards, the claims scoreboard):
# `snakemake results/published/index.html` after adding or rebuilding a set
rule build_published_site:
    input:
        sorted(glob.glob("results/published/*/summary.csv*")),
    output:
        "results/published/index.html",
    log:
        "results/logs/build_published_site.log",
    run:
        from lossbench.report.site import build_site

        build_site("results/published")
