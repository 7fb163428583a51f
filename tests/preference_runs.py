"""One preference run through its jobs without Snakemake, on stages a test module built."""
from lossbench import config as lbconfig
from lossbench import runner
from lossbench.tasks import preference as task


def run_through(track, stage, tmp, method, variant, dataset):
    """train_run -> sample_eval [-> capability, hub testbed] -> evaluate_run of seed 0 in tmp/method/variant;
    returns ({metric: value}, run dir). A TGDPO guide is the DPO beta0.1 run under `tmp`."""
    run = lbconfig.resolve_run(track, dataset, method, 0, variant)
    out = tmp / method / variant
    inputs = task.train_inputs(run, stage, "micro")
    if "guide" in inputs:
        inputs["guide"] = str(tmp / "dpo" / "beta0.1" / "train.json")
    runner.train_run(run, inputs, out)
    staged = task.sample_eval_inputs(run, out, stage)
    task.sample_eval(run, staged, out / "eval.npz")
    if "capability" in task.eval_inputs(run, out, stage):
        task.build_capability(run["protocol"], staged["sft"], out / "policy.pt", out / "capability.json")
    metrics = runner.evaluate_run(out)
    return dict(zip(metrics.metric, metrics.value)), out
