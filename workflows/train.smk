def prepared_checksums(wildcards):
    """The prepare step's record of each prepared source the run reads (prepared.npz.sha256), as
    `<name>_sha256`: lossbench.runner.check_inputs refuses a prepared file that does not match it."""
    return prepared_sidecars(train_inputs(wildcards))


def prepared_sidecars(inputs: dict) -> dict:
    """`<name>_sha256`: the sidecar of each prepared source among `inputs`."""
    return {f"{k}_sha256": f"{p}.sha256" for k, p in inputs.items() if p.endswith("/prepared.npz")}


rule train_run:
    input:
        unpack(train_inputs),
        unpack(prepared_checksums),
        unpack(tuning_inputs),  # a `tuned` run: the choice file of its trials (workflows/tuning.smk)
        unpack(together_input),  # seeds trained together: the group's index (workflows/together.smk)
    output:
        # the task's own artefacts (predictions.npz, final.json, policy.pt: their names depend on the
        # track's task, which an output pattern cannot) sit beside these; train.json records the sha256
        # of each, and every later reader checks it (lossbench.runner.check_artefacts)
        curves=f"{RUN_DIR}/curves.csv",
        info=f"{RUN_DIR}/train.json",
    params:
        run=resolved_run,  # the resolved config (hparams, protocol, versions): a change reruns
        retry=retry_token,  # changes after a failure: the next invocation retries failed runs only
    log:
        "results/{profile}/logs/train_run/{track}/{dataset}/{method}/{variant}/seed{seed}.log",
    threads: 1
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime,
        gpu=1 if config["device"] != "cpu" else 0,
    run:
        from lossbench import runner, workers

        inputs, resolved = dict(input.items()), params.run
        if "choice" in inputs:  # the chosen trial's point, merged in now that the choice exists
            resolved = tuning.tuned_run(TRACKS[wildcards.track], wildcards.dataset, wildcards.method,
                                        int(wildcards.seed), inputs.pop("choice"), wildcards.variant)
        twins = [inputs.pop(k) for k in list(inputs) if k.startswith(tuning.TWIN)]  # earlier final variants
        if "together" in inputs:  # this seed's folder of the group, if the group trained
            twins.append(os.path.join(os.path.dirname(inputs.pop("together")), f"seed{wildcards.seed}", "train.json"))
        try:
            run_job(runner.train_run, resolved, inputs, os.path.dirname(output.info),
                    device=config["device"], log_path=log[0], twins=twins)
        except workers.WorkerDied as e:  # runner.train_run records exceptions itself; a killed worker cannot
            runner.record_failure(resolved, os.path.dirname(output.info), e, log[0])
