"""A corpus of broken configs, as a new user writes them (issue 16): each must stop `lossbench validate`
with ONE line naming the file, the key, the value and, where there are choices, the valid ones —
never a traceback, never a pass that fails (or silently misleads) once jobs run.

Each case is one row of CASES: a small profile and track (or a registry edit) written to tmp_path,
the class of failure the issue found it in, and the fragments its one-line message must hold. The
rows run in-process (`lossbench.cli.main`, seconds in all); a few also run through `snakemake -n`
(marked slow) to prove the DAG refuses them at parse time with the same line.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from lossbench import data
from lossbench import cli
from lossbench import config as lbconfig

ROOT = lbconfig.ROOT

# the issue's four classes, plus ours
TRACEBACK = "traceback"  # a raw Python traceback before
LATE = "late"  # accepted by validate and snakemake -n, failing only when jobs ran
WRONG = "wrong"  # accepted, with wrong results
UNCLEAR = "unclear"  # stopped, but with a message that did not say what to fix
EXTRA = "extra"  # our additions

# Small tracks of each task (registered names only), cheap to validate.
CLS = {
    "track": "cls", "version": 1, "task": "classification", "baseline": "erm", "methods": ["erm", "focal"],
    "seeds": [0, 1], "stats": {"ci": 0.95},
    "protocols": {"mlp_adam": {
        "datasets": ["mnist1d_lt100", "mnist1d_sym40"], "model": {"name": "mlp", "hidden": [64, 64]},
        "optimizer": {"name": "adam", "lr": 0.001}, "schedule": {"name": "constant"},
        "budget": {"steps": 40, "batch_size": 64}}},
}
CLS_SWEEP = {"erm": {"lr": [0.001, 0.003]}, "focal": {"gamma": [1.0, 2.0]}}
LM = {
    "track": "lm", "version": 1, "task": "lm_pretraining", "baseline": "uniform", "methods": ["uniform", "zloss"],
    "seeds": [0], "stats": {"ci": 0.95},
    "protocols": {"t0_mix": {
        "datasets": ["shakespeare_mix"], "model": {"arch": "gpt2", "d_model": 48, "layers": 2, "heads": 4, "context": 64},
        "optimizer": {"name": "adamw", "lr": 0.004}, "schedule": {"warmup_steps": 8, "min_lr_ratio": 0.1},
        "budget": {"steps": 80, "batch_size": 16}, "data": {"pool_chunks": 256}, "eval": {"every": 20}}},
}
BASES = {"cls": CLS, "lm": LM}
DELETE = object()


def _set(doc: dict, path: str, value) -> None:
    *parents, last = path.split("/")
    for key in parents:
        doc = doc[key]
    if value is DELETE:
        del doc[last]
    else:
        doc[last] = value


@dataclass
class Case:
    id: str
    kind: str
    expect: tuple[str, ...]  # fragments of the one-line message ({tmp} = the case's folder)
    base: str = "cls"
    edit: dict[str, Any] = field(default_factory=dict)  # track path -> value (DELETE removes it)
    track: str | None = None  # the track file's raw text instead of base + edit
    profile: str | dict | None = None  # the profile's raw text, or keys replacing the default profile's
    registry: Callable[[dict], None] | None = None  # edits a copy of data/registry.yaml
    config: str | None = None  # the path given to validate, when not the written profile ({tmp})


def case(id, kind, *expect, **kw) -> Case:
    return Case(id, kind, expect, **kw)


def _reg(path: str, value):
    return lambda reg: _set(reg, path, value)


CASES = [
    # ---- raw Python tracebacks before (8)
    case("profile_yaml_syntax", TRACEBACK, "profile.yaml", "YAML syntax error at line 3, column 7",
         "while parsing a flow sequence started at line 2, column 9",
         profile="profile: x\ndevice: [cpu\ntracks: {}\n"),
    case("track_yaml_syntax", TRACEBACK, "track.yaml", "YAML syntax error at line 3",
         "flow sequence started at line 2, column 10",
         track="track: cls\nmethods: [erm, focal\nseeds: [0]\n"),
    case("tab_indent", TRACEBACK, "track.yaml", "YAML syntax error at line 3", "'\\t'", "spaces, never tabs",
         track="track: cls\nprotocols:\n\tmlp_adam: {}\n"),
    case("missing_configfile", TRACEBACK, "no such profile file", "{tmp}/nope.yaml", config="{tmp}/nope.yaml"),
    case("missing_track_file", TRACEBACK, "profile.yaml: tracks/cls: no such file: config/tracks/classification/smok.yaml",
         "paths resolve against the repository root", "did you mean config/tracks/classification/smoke.yaml?",
         profile={"tracks": {"cls": "config/tracks/classification/smok.yaml"}}),
    case("missing_track_file_absolute", TRACEBACK, "profile.yaml: tracks/cls: no such file: {tmp}/trak.yaml",
         "(did you mean track.yaml?)", profile={"tracks": {"cls": "{tmp}/trak.yaml"}}),
    case("track_path_is_a_folder", TRACEBACK, "tracks/cls: config/tracks/classification is a folder, not a track file",
         "config/tracks/classification/smoke.yaml", profile={"tracks": {"cls": "config/tracks/classification"}}),
    case("track_path_relative_to_profile", TRACEBACK, "tracks/cls: no such file: track.yaml",
         "resolve against the repository root", "not the profile's folder", "write the absolute path {tmp}/track.yaml",
         profile={"tracks": {"cls": "track.yaml"}}),
    case("hparam_as_string", TRACEBACK, "track.yaml: method_hparams/focal: gamma: expected a number (default 2.0)",
         "the string '2' (quoted: write it without quotes)", edit={"method_hparams": {"focal": {"gamma": "2"}}}),
    case("registry_unknown_source", TRACEBACK, "registry.yaml: datasets/mnist1d_lt100: source: unknown source 'mnist_1d'",
         "Did you mean mnist1d", "Valid: mnist1d, digits", registry=_reg("datasets/mnist1d_lt100/source", "mnist_1d")),
    # ---- accepted by both checks, failing only when jobs ran (8)
    case("batch_size_float", LATE, "track.yaml: protocols/mlp_adam: budget/batch_size: expected an integer, got 64.0",
         "write 64", edit={"protocols/mlp_adam/budget/batch_size": 64.0}),
    case("model_key_typo", LATE, "protocols/mlp_adam: model: Additional properties are not allowed ('hiddn' was unexpected)",
         "did you mean hidden?", "valid keys: name, hidden, norm",
         edit={"protocols/mlp_adam/model": {"name": "mlp", "hiddn": [64]}}),
    case("norm_typo", LATE, "protocols/mlp_adam: model/norm: 'batchnrom' is not one of ['none', 'batchnorm', 'layernorm']",
         "did you mean batchnorm?", edit={"protocols/mlp_adam/model/norm": "batchnrom"}),
    case("sweep_lr_negative", LATE, "protocols/mlp_adam (as run by erm, variant lr-0.001)", "optimizer/lr",
         "-0.001 is less than or equal to the minimum of 0",
         edit={"sweep": {"erm": {"lr": [-0.001, 0.003]}, "focal": {"gamma": [1.0, 2.0]}}}),
    case("sweep_lr_string", LATE, "protocols/mlp_adam (as run by erm, variant lr1e-3)", "optimizer/lr",
         "expected a number, got the string '1e-3'", "YAML reads 1e-3 as text: write it with a dot",
         track=yaml.safe_dump({**CLS, "sweep": CLS_SWEEP}).replace("- 0.001\n", "- 1e-3\n")),
    case("heads_do_not_divide_d_model", LATE, "protocols/t0_mix/model: heads: 5 attention heads do not divide d_model 48",
         "valid heads for d_model 48: 1, 2, 3, 4, 6, 8, 12, 16, 24, 48", base="lm",
         edit={"protocols/t0_mix/model/heads": 5}),
    case("registry_noise_kind_typo", LATE, "registry.yaml: datasets/mnist1d_sym40: noise/kind: unknown noise kind 'symetric'",
         "Did you mean symmetric", "Valid: symmetric, asymmetric_cifar10, pair_flip",
         registry=_reg("datasets/mnist1d_sym40/noise/kind", "symetric")),
    case("registry_noise_key_typo", LATE, "registry.yaml: datasets/mnist1d_sym40: noise: unknown key 'rat'",
         "Did you mean rate", "Valid keys: kind, rate, include_true",
         registry=lambda reg: reg["datasets"]["mnist1d_sym40"].update(
             noise={"kind": "symmetric", "rat": 0.4, "include_true": False})),
    # ---- accepted, with wrong results (3)
    case("dataset_filter_matches_nothing", WRONG, "profile.yaml: datasets: the pattern 'cifar*' matches no dataset",
         "Valid: mnist1d_lt100, mnist1d_sym40", profile={"datasets": ["cifar*"]}),
    case("registry_long_tail_below_1", WRONG, "registry.yaml: datasets/mnist1d_lt100: long_tail",
         "must be a number >= 1", "got 0.5", registry=_reg("datasets/mnist1d_lt100/long_tail", 0.5)),
    case("registry_noise_rate_above_1", WRONG, "registry.yaml: datasets/mnist1d_sym40: noise/rate",
         "must be a number in [0, 1)", "got 1.5", registry=_reg("datasets/mnist1d_sym40/noise/rate", 1.5)),
    # ---- unclear stops (5 + 1)
    case("empty_profile", UNCLEAR, "profile.yaml: the profile file", "is empty", profile=""),
    case("empty_track", UNCLEAR, "track.yaml: the track file", "is empty", track="# nothing yet\n"),
    case("steps_and_epochs", UNCLEAR, "protocols/mlp_adam: budget: set exactly one of epochs, steps; got epochs and steps",
         edit={"protocols/mlp_adam/budget/epochs": 2}),
    case("seeds_as_floats", UNCLEAR, "track.yaml: seeds/", "expected an integer, got", "(a float; write ",
         edit={"seeds": [0.0, 1.0]}),
    case("protocol_name_with_dotdot", UNCLEAR, "track.yaml: protocols: '../mlp_adam' is not a valid name",
         "lower-case letters, digits and _ only",
         edit={"protocols": {"../mlp_adam": CLS["protocols"]["mlp_adam"]}}),
    case("sweep_value_with_dotdot", UNCLEAR, "sweep/anyloss: the grid point {'metric': '../f1'}",
         "variant 'metric../f1'", "no '/' or '..'",
         edit={"methods": ["erm", "anyloss"], "sweep": {"erm": {"lr": [0.001]}, "anyloss": {"metric": ["../f1"]}}}),
    # ---- our additions
    case("profile_key_typo", EXTRA, "profile.yaml: (top level): Additional properties are not allowed ('track' was unexpected)",
         "did you mean tracks", "valid keys: profile, device", profile={"track": {}}),
    case("profile_is_a_list", EXTRA, "profile.yaml: a profile file holds a mapping of keys, got a list",
         profile="- profile: x\n- device: cpu\n"),
    case("device_typo", EXTRA, "profile.yaml: device: 'gpu' is not one of ['cpu', 'cuda', 'auto']", profile={"device": "gpu"}),
    case("profile_name_with_capitals", EXTRA, "profile.yaml: profile: 'Smoke' is not a valid name", profile={"profile": "Smoke"}),
    case("dataset_filter_one_pattern_typo", EXTRA, "datasets: the pattern 'mnist1d_lt10O' matches no dataset",
         "Did you mean mnist1d_lt100", profile={"datasets": ["mnist1d_sym*", "mnist1d_lt10O"]}),
    case("track_key_typo", EXTRA, "track.yaml: (top level): Additional properties are not allowed ('seed' was unexpected)",
         "did you mean seeds", edit={"seed": [0]}),
    case("method_name_with_capitals", EXTRA, "track.yaml: methods/1: 'Focal' is not a valid name",
         edit={"methods": ["erm", "Focal"]}),
    case("unknown_model", EXTRA, "protocols/mlp_adam/model: unknown model 'mpl'", "Did you mean mlp",
         "Valid: cnn1d, mlp, resnet32", edit={"protocols/mlp_adam/model": {"name": "mpl"}}),
    case("model_hidden_not_a_list", EXTRA, "protocols/mlp_adam: model/hidden: expected a list, got 64",
         edit={"protocols/mlp_adam/model/hidden": 64}),
    case("resnet_depth", EXTRA, "protocols/mlp_adam/model: depth: a CIFAR ResNet's depth is 6n+2, got 33",
         edit={"protocols/mlp_adam/model": {"name": "resnet32", "depth": 33}}),
    case("teacher_model_key_typo", EXTRA, "protocols/mlp_adam: teacher/model: Additional properties are not allowed ('hiden'",
         edit={"methods": ["erm", "kd"], "protocols/mlp_adam/teacher": {"model": {"name": "mlp", "hiden": [64]}}}),
    case("optimizer_axis_model_typo", EXTRA, "protocols/mlp_adam (as run by erm, variant optimizersgd)",
         "model/norm: 'batch' is not one of", "did you mean batchnorm",
         edit={"optimizer_axis": {"methods": ["erm"], "baseline": "sgd", "model": {"name": "mlp", "norm": "batch"},
                                  "optimizers": {"sgd": {"name": "sgd", "lr": 0.1}}}}),
    case("epochs_float", EXTRA, "budget/steps: expected an integer, got 40.5", edit={"protocols/mlp_adam/budget/steps": 40.5}),
    case("optimizer_lr_yaml_text", EXTRA, "protocols/mlp_adam: optimizer/lr: expected a number, got the string '1e-3'",
         track=yaml.safe_dump(CLS).replace("lr: 0.001", "lr: 1e-3")),
    case("negative_seed", EXTRA, "seeds/0: -1 is less than the minimum of 0", edit={"seeds": [-1, 0]}),
    case("hparam_bool_for_float", EXTRA, "method_hparams/focal: gamma: expected a number (default 2.0), got the boolean True",
         edit={"method_hparams": {"focal": {"gamma": True}}}),
    case("sweep_hparam_string", EXTRA, "sweep/focal (gamma2): gamma: expected a number (default 2.0), got the string '2'",
         edit={"sweep": {"erm": {"lr": [0.001]}, "focal": {"gamma": ["2"]}}}),
    case("llama_odd_head_size", EXTRA, "protocols/t0_mix/model: heads: llama's rotary embeddings need an even head size",
         "48 / heads 16 = 3", base="lm", edit={"protocols/t0_mix/model": {
             "arch": "llama", "d_model": 48, "layers": 2, "heads": 16, "context": 64}}),
    case("lm_context_below_chunks", EXTRA, "protocols/t0_mix/model: context: 32 positions are fewer than the 64-token chunks",
         "set context >= 64", base="lm", edit={"protocols/t0_mix/model/context": 32}),
    case("lm_reference_model_typo", EXTRA, "protocols/t0_mix: reference/model: Additional properties are not allowed",
         "'d_modle' was unexpected", "did you mean d_model", base="lm",
         edit={"methods": ["uniform", "prior"], "protocols/t0_mix/reference": {
             "steps": 8, "checkpoints": 2, "projection": [4, 4],
             "model": {"arch": "gpt2", "d_modle": 48, "layers": 2, "heads": 4, "context": 64}}}),
    case("extends_missing_file", EXTRA, "track.yaml: extends: no such track file: config/tracks/classification/smok.yaml",
         "resolve against the repository root", "not the track file's folder", track="extends: config/tracks/classification/smok.yaml\n"),
    case("extends_a_folder", EXTRA, "track.yaml: extends: config/tracks is a folder, not a track file",
         track="extends: config/tracks\n"),
    case("extends_itself", EXTRA, "track.yaml: extends: {tmp}/track.yaml extends itself", track="extends: {tmp}/track.yaml\n"),
    case("duplicate_key", EXTRA, "track.yaml: YAML syntax error at line", "duplicate key 'seeds' (first at line",
         track=yaml.safe_dump(CLS) + "seeds: [3]\n"),
    case("profile_duplicate_key", EXTRA, "profile.yaml: YAML syntax error at line 4, column 1",
         "duplicate key 'device' (first at line 2)",
         profile="profile: broken\ndevice: cpu\ntracks: {cls: {tmp}/track.yaml}\ndevice: cuda\n"),
    case("methods_not_a_list", EXTRA, "track.yaml: methods: expected a list, got the string 'focal'", edit={"methods": "focal"}),
    case("tracks_not_a_mapping", EXTRA, "profile.yaml: tracks: expected a mapping, got the string",
         profile={"tracks": "config/tracks/classification/smoke.yaml"}),
    case("task_typo", EXTRA, "track.yaml: task: unknown task 'clasification'. Did you mean classification?",
         "Valid: classification, grokking, lm_pretraining, preference", edit={"task": "clasification"}),
    case("track_name_mismatch", EXTRA, "profile.yaml: tracks/cls points at a file for track 'other'", edit={"track": "other"}),
    case("registry_dataset_key_typo", EXTRA, "registry.yaml: datasets/mnist1d_lt100: unknown key 'long_tial'",
         "Did you mean long_tail", registry=lambda reg: reg["datasets"].__setitem__(
             "mnist1d_lt100", {"source": "mnist1d", "long_tial": 100})),
    case("registry_long_tail_string", EXTRA, "datasets/mnist1d_lt100: long_tail", "got '100'",
         registry=_reg("datasets/mnist1d_lt100/long_tail", "100")),
    case("registry_source_kind_typo", EXTRA, "registry.yaml: sources/mnist1d: kind: 'generate' is not a valid value",
         "Did you mean generated", "Valid: generated, packaged, download, hub",
         registry=_reg("sources/mnist1d/kind", "generate")),
    case("registry_download_without_md5", EXTRA, "registry.yaml: sources/cifar10: missing md5",
         registry=_reg("sources/cifar10/md5", DELETE)),
    case("registry_label_noise_1", EXTRA, "registry.yaml: datasets/synthpref_eps10: label_noise", "got 1.0",
         registry=_reg("datasets/synthpref_eps10/label_noise", 1.0)),
    case("registry_train_fraction", EXTRA, "datasets/mod113_add_f40: train_fraction: must be a number in (0, 1), got 1.5",
         registry=_reg("datasets/mod113_add_f40/train_fraction", 1.5)),
    case("registry_noise_on_grokking", EXTRA, "datasets/mod113_add_f40: noise: applies to classification datasets only",
         registry=_reg("datasets/mod113_add_f40/noise", {"kind": "symmetric", "rate": 0.1})),
    case("registry_dataset_name", EXTRA, "registry.yaml: datasets/MNIST_lt: not a valid name",
         registry=lambda reg: reg["datasets"].__setitem__("MNIST_lt", {"source": "mnist1d", "long_tail": 10})),
]


def _write_case(c: Case, tmp: Path) -> str:
    """The case's files in `tmp`; the path to give `lossbench validate`."""
    track_path = tmp / "track.yaml"
    if c.track is not None:
        track_path.write_text(c.track)
    else:
        track = copy.deepcopy(BASES[c.base])
        for path, value in c.edit.items():
            _set(track, path, copy.deepcopy(value))
        track_path.write_text(yaml.safe_dump(track, sort_keys=False))
    name = BASES[c.base]["track"]
    if c.track is not None and "{tmp}" in c.track:
        track_path.write_text(c.track.replace("{tmp}", str(tmp)))
    if isinstance(c.profile, str):
        text = c.profile.replace("{tmp}", str(tmp))
    else:
        profile = {"profile": "broken", "device": "cpu", "tracks": {name: str(track_path)}, **(c.profile or {})}
        text = yaml.safe_dump(profile).replace("{tmp}", str(tmp))
    (tmp / "profile.yaml").write_text(text)
    return (c.config or str(tmp / "profile.yaml")).replace("{tmp}", str(tmp))


@pytest.fixture
def registry(monkeypatch):
    """A case's registry edit applied to a copy of data/registry.yaml (what every check reads)."""
    def apply(edit):
        reg = copy.deepcopy(data.registry())
        edit(reg)
        monkeypatch.setattr(data, "registry", lambda: reg)
    return apply


def _validate(argv, capsys) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("c", CASES, ids=lambda c: f"{c.kind}-{c.id}")
def test_broken_config_gives_one_clear_line(c, tmp_path, capsys, registry):
    if c.registry:
        registry(c.registry)
    config = _write_case(c, tmp_path)
    rc, out, err = _validate(["validate", config], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and not out, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "please report it" not in err, err  # not the safety net either
    for fragment in c.expect:
        assert fragment.replace("{tmp}", str(tmp_path)) in lines[0], f"{fragment!r} not in\n{lines[0]}"


def test_the_corpus_covers_the_issue():
    """Issue 16's classes, at least as many cases as it found in each, and one line per case."""
    counts = {k: sum(c.kind == k for c in CASES) for k in (TRACEBACK, LATE, WRONG, UNCLEAR, EXTRA)}
    assert counts[TRACEBACK] >= 8 and counts[LATE] >= 8 and counts[WRONG] >= 3 and counts[UNCLEAR] >= 5
    assert counts[EXTRA] >= 10 and len({c.id for c in CASES}) == len(CASES)


def test_the_bases_are_valid(tmp_path, capsys):
    """Each case breaks exactly what it says: its base track alone validates."""
    for base in BASES:
        config = _write_case(Case("base", EXTRA, (), base=base), tmp_path)
        assert _validate(["validate", config], capsys)[0] == 0
        sweep = _write_case(Case("sweep", EXTRA, (), edit={"sweep": CLS_SWEEP}), tmp_path)
        assert _validate(["validate", sweep], capsys)[0] == 0


# ---- the DAG refuses them too, at parse time, before any job, with the same line

DAG_CASES = ["batch_size_float", "model_key_typo", "dataset_filter_matches_nothing", "track_yaml_syntax",
             "sweep_lr_negative", "empty_profile", "track_path_relative_to_profile",
             "profile_duplicate_key"]


@pytest.mark.slow
@pytest.mark.parametrize("cid", DAG_CASES)
def test_snakemake_refuses_before_training(cid, tmp_path, capsys):
    c = next(c for c in CASES if c.id == cid)
    config = _write_case(c, tmp_path)
    rc, _, err = _validate(["validate", config], capsys)
    line = err.strip().removeprefix("error: ")
    assert rc == 2 and line
    env = {**os.environ, "BENCH_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n",
                          "--workflow-profile", "none", "--configfile", config, "--directory", str(tmp_path / "work")],
                         cwd=tmp_path, capture_output=True, text=True, env=env)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "Traceback (most recent call last)" not in text, text[-3000:]
    assert "train_run" not in out.stdout  # no job planned, let alone run
    if cid == "empty_profile":  # Snakemake reads --configfile itself and refuses an empty one first
        assert "Config file must be given as JSON or YAML with keys at top level" in text, text[-3000:]
    else:
        assert f"config error: {line}" in text, text[-3000:]
