"""Task registry: what a track's `task` means for training, evaluation and config checks.

A task module provides:
  PROTOCOL_SCHEMA      name of config/schema/<name>.schema.yaml validating one protocol block
  METHOD_KINDS         the method kinds (methods/base.py) the task's trainer can run
  check_protocol(proto, where, track)       checks a schema can't do (registered model names...)
  train_inputs(run, stage_dir) -> {name: path}  files a run trains from (Snakemake inputs)
  train_run(run, inputs, out_dir, device, log)   -> dict written to train.json
  eval_inputs(run, run_dir, stage_dir) -> {name: path}  extra files evaluation reads ({} if none)
  evaluate_run(run_dir, info)               -> (dict metric -> value, per-class DataFrame or None)
  SELECTION            {"metric", "higher_is_better"[, "split"]}: what a sweep's variant is chosen on
                       per (dataset, method) in the report (report/selection.py); split "train" where
                       the task has no validation data (default "validation")
and optionally
  METHOD_OPTIMIZER     true when the trainer builds the optimiser per run, so methods may set
                       `optimizer_hparams` (methods/base.py); other tasks refuse such methods
  runs_on(method, dataset) -> bool   whether a track's method runs on the dataset when the track's
                       dataset_methods does not list it (default: every method everywhere)
"""
from __future__ import annotations

import difflib
import importlib

TASKS = {
    "classification": "lossbench.tasks.classification",
    "preference": "lossbench.tasks.preference",
    "lm_pretraining": "lossbench.tasks.lm_pretraining",
    "grokking": "lossbench.tasks.grokking",
}


def get(task: str):
    if task not in TASKS:
        close = difflib.get_close_matches(task, TASKS, n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown task {task!r}.{hint} Valid: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[task])
