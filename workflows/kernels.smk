# Benchmark tracks (no training runs): the kernels benchmark, one job per slice of each config
# (config/tracks/kernels/*.yaml, lossbench/kernels/bench.py), then one tidy table for the report.
KERNEL_SLICE = "results/{profile}/kernels/{bench}/{slice}"


def kernel_slice_csvs(profile):
    return [f"results/{profile}/kernels/{b}/{s}.csv" for b, track in BENCHES.items() for s in track["slices"]]


rule kernel_bench:
    output:
        csv=f"{KERNEL_SLICE}.csv",
        meta=f"{KERNEL_SLICE}.json",
    params:
        # what the slice's numbers depend on: editing it reruns the slice
        cfg=lambda wc: {k: BENCHES[wc.bench].get(k) for k in ("version", "impls", "measure")}
        | {"slice": BENCHES[wc.bench]["slices"][wc.slice]},
    # every core: no other job may share the cores while a slice is being timed
    threads: all_cores()
    resources:
        mem_mb=16000,
        runtime=4 * 60,
        gpu=1 if config["device"] != "cpu" else 0,
    log:
        "results/{profile}/logs/kernel_bench/{bench}/{slice}.log",
    run:
        from lossbench.kernels import bench

        run_job(bench.run_slice, BENCHES[wildcards.bench], wildcards.slice, config["device"], output.csv,
                log_path=log[0])


rule aggregate_kernels:
    input:
        lambda wc: kernel_slice_csvs(wc.profile),
    output:
        table="results/{profile}/kernels.csv",
        meta="results/{profile}/kernels.json",
    log:
        "results/{profile}/logs/aggregate_kernels.log",
    run:
        from lossbench import runner

        runner.aggregate_kernels(input, output.table, output.meta, {b: t["baselines"] for b, t in BENCHES.items()})
