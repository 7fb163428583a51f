rule train_run:
    input:
        data=prepared_data,
    output:
        # the task's own artefacts (predictions.npz for classification) sit beside these
        curves="results/{profile}/runs/{track}/{dataset}/{method}/seed{seed}/curves.csv",
        info="results/{profile}/runs/{track}/{dataset}/{method}/seed{seed}/train.json",
    params:
        run=resolved_run,  # the resolved config (hparams, protocol, versions): a change reruns
    log:
        "results/{profile}/logs/train_run/{track}/{dataset}/{method}/seed{seed}.log",
    threads: 1
    resources:
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench import runner

        run_job(runner.train_run, params.run, input.data, os.path.dirname(output.info), device=config["device"], log_path=log[0])
