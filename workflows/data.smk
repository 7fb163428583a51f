rule download_source:
    output:
        "resources/downloads/{source}/{archive}",
    log:
        "results/logs/download_source/{source}/{archive}.log",
    run:
        datasets.download_source(wildcards.source, output[0])


rule prepare_source:
    input:
        source_archive,
    output:
        "resources/data/{source}/prepared.npz",
        # its sha256 (lossbench.io.write_sidecar): training refuses a prepared file that differs
        "resources/data/{source}/prepared.npz.sha256",
    params:
        entry=lambda wc: datasets.source_entry(wc.source),  # editing a source's recipe re-prepares it
    priority: 30  # every run of the source waits for it
    threads: 1
    resources:
        mem_mb=source_mem_mb,
        runtime=source_runtime,
    log:
        "results/logs/prepare_source/{source}.log",
    run:
        from lossbench import runner

        raw_dir = os.path.dirname(input[0]) if input else None
        run_job(runner.prepare_source, wildcards.source, output[0], raw_dir=raw_dir, log=log[0])
