# Equal-budget tuning (a track's `tuning:`, lossbench/tuning.py): every method's trials (variants
# trial00..) run on the tuning seeds, choose_trial picks the best on the task's validation metric and
# writes the choice file, and the variant `tuned` trains on the final seeds from it (a task with several
# rules, the preference views: one choice per rule in the same file, one final variant `tuned_<view>` each). A `tuned` run's
# params hold its DAG-time config (trial 0's point): the chosen point is merged in inside its job
# (tuning.tuned_run), since params cannot read a file that does not exist yet.
from lossbench import tuning  # noqa: E402

CHOICE = "results/{profile}/tuning/{track}/{dataset}/{method}.json"


def trial_run_dirs(wildcards):
    """Every trial run of (track, dataset, method): each trial on each tuning seed."""
    track = TRACKS[wildcards.track]
    seeds = tuning.settings(track, wildcards.dataset)["seeds"]
    return [RUN_DIR.format(profile=wildcards.profile, track=wildcards.track, dataset=wildcards.dataset,
                           method=wildcards.method, variant=v, seed=s)
            for v in tuning.trials_to_run(track, wildcards.method, wildcards.dataset) for s in seeds]


def tuning_inputs(wildcards):
    """A final run's choice file (`tuned`, or a rule's `tuned_<view>`; no extra input for any other variant),
    and the train.json of each earlier final variant of the same seed (`twin_<variant>`): where one of
    them trained the same chosen point, this run is that run and copies it (runner.train_run)."""
    if not tuning.is_tuned(wildcards.variant):
        return {}
    finals = tuning.tuned_variants(TRACKS[wildcards.track], wildcards.method, wildcards.dataset)
    twins = finals[:finals.index(wildcards.variant)] if wildcards.variant in finals else []
    return {"choice": CHOICE.format(profile=wildcards.profile, track=wildcards.track, dataset=wildcards.dataset,
                                    method=wildcards.method),
            **{f"{tuning.TWIN}{v}": RUN_DIR.format(**{**dict(wildcards.items()), "variant": v}) + "/train.json"
               for v in twins}}


rule choose_trial:
    input:
        metrics=lambda wc: [f"{d}/metrics.csv" for d in trial_run_dirs(wc)],
        runs=lambda wc: [f"{d}/run.json" for d in trial_run_dirs(wc)],  # metrics.csv is checked against it
    output:
        CHOICE,
    params:
        trials=lambda wc: tuning.trials(TRACKS[wc.track], wc.method, wc.dataset),  # a new draw reruns
        seeds=lambda wc: tuning.settings(TRACKS[wc.track], wc.dataset)["seeds"],
    log:
        "results/{profile}/logs/choose_trial/{track}/{dataset}/{method}.log",
    run:
        tuning.write_choice(TRACKS[wildcards.track], wildcards.dataset, wildcards.method,
                            trial_run_dirs(wildcards), output[0])
