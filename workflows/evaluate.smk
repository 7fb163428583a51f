rule evaluate_run:
    input:
        info="results/{profile}/runs/{track}/{dataset}/{method}/seed{seed}/train.json",
    output:
        metrics="results/{profile}/runs/{track}/{dataset}/{method}/seed{seed}/metrics.csv",
        per_class="results/{profile}/runs/{track}/{dataset}/{method}/seed{seed}/per_class.csv",
        run="results/{profile}/runs/{track}/{dataset}/{method}/seed{seed}/run.json",
    # evaluate as soon as a run is trained: keeps Snakemake's ready set (whose input sizes it
    # re-reads every scheduling round) small, which is most of its overhead with ~500 jobs
    priority: 10
    log:
        "results/{profile}/logs/evaluate_run/{track}/{dataset}/{method}/seed{seed}.log",
    run:
        from lossbench import runner

        runner.evaluate_run(os.path.dirname(output.metrics))
