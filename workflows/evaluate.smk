def evaluate_retry_token(wildcards):
    """Changes after an evaluation that started and never finished (killed, or stopped by an
    integrity error): Snakemake deleted its outputs but kept its metadata, so only this reruns it."""
    from lossbench import runner

    return runner.retry_token(RUN_DIR.format(**wildcards), "evaluate_run")


rule evaluate_run:
    input:
        unpack(eval_inputs),
        info=f"{RUN_DIR}/train.json",
    output:
        metrics=f"{RUN_DIR}/metrics.csv",
        per_class=f"{RUN_DIR}/per_class.csv",
        run=f"{RUN_DIR}/run.json",
    params:
        retry=evaluate_retry_token,
    # evaluate as soon as a run is trained: keeps Snakemake's ready set (whose input sizes it
    # re-reads every scheduling round) small, which is most of its overhead with ~500 jobs
    priority: 10
    log:
        "results/{profile}/logs/evaluate_run/{track}/{dataset}/{method}/{variant}/seed{seed}.log",
    run:
        from lossbench import runner

        runner.evaluate_run(os.path.dirname(output.metrics), log[0])
