"""Local lm-eval tasks over a prepared lm_pretraining corpus's held-out passages (`test_texts`),
written as YAML + jsonl so that lm-eval runs them offline (docs/methods/README.md, LM-pretraining track; run them with lossbench.hub.capability_retention, include_path=out_dir):

- `<prefix>_ppl`: loglikelihood_rolling over whole passages (word and byte perplexity, bits per byte).
- `<prefix>_cloze`: multiple choice. The context is the start of a passage (whole lines, at least
  CONTEXT_CHARS), the choices are its true continuation (the next non-blank lines, at least
  CONTINUATION_CHARS) and the continuations of 3 other passages, drawn and ordered with `seed`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

CONTEXT_CHARS = 200
CONTINUATION_CHARS = 60
N_CHOICES = 4


def cloze_parts(passage: str):
    """(context, continuation) cut at line ends as the module docstring says; None if too short."""
    lines = passage.split("\n")
    i = size = 0
    while i < len(lines) and size < CONTEXT_CHARS:
        size += len(lines[i]) + 1
        i += 1
    follow, size = [], 0
    for line in (x for x in lines[i:] if x.strip()):
        follow.append(line)
        size += len(line) + 1
        if size >= CONTINUATION_CHARS:
            return "\n".join(lines[:i]).rstrip(), "\n".join(follow)
    return None


LOADER = "lossbench.data.lm_eval_tasks.load_local"  # the task files' custom_dataset (lm-eval imports it by name)


def load_local(data_file: str, config_source: str, **_):
    """A local task's documents: the jsonl `data_file` named relative to the task's YAML file
    (`config_source`, which lm-eval's TaskManager passes with the task's metadata), so the task
    folder reads the same wherever the results folder is moved."""
    import datasets

    path = Path(data_file)
    if not path.is_absolute():
        path = Path(config_source).parent / path
    return datasets.load_dataset("json", data_files={"test": str(path)})


def _write(out_dir: Path, task: str, rows: list[dict], **config) -> str:
    data = out_dir / f"{task}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the data file by name, relative to this YAML (load_local): no absolute path in the results
    config = {"task": task, "dataset_kwargs": {"data_file": data.name}, "test_split": "test", **config,
              "metadata": {"version": 1.0}}
    text = yaml.safe_dump(config, sort_keys=False) + f"custom_dataset: !function {LOADER}\n"
    (out_dir / f"{task}.yaml").write_text(text)
    return task


def write_lm_eval_tasks(prepared: dict, out_dir, *, seed: int, n_docs: int, prefix: str = "shakespeare") -> list[str]:
    """Write `<prefix>_ppl` and `<prefix>_cloze` (YAML + jsonl, the YAML naming the jsonl relative to
    itself) into `out_dir`, each over `n_docs` passages (fewer if there are fewer) drawn with `seed`;
    returns the task names."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    texts = [str(t) for t in prepared["test_texts"]]
    ppl = [{"text": texts[i]} for i in np.sort(rng.choice(len(texts), min(n_docs, len(texts)), replace=False))]

    parts = [p for p in map(cloze_parts, texts) if p is not None]
    if len(parts) < N_CHOICES:  # lm-eval would fail later on an empty file, without saying why
        raise ValueError(f"{prefix}_cloze: only {len(parts)} of {len(texts)} test passages have {CONTEXT_CHARS} "
                         f"characters of lines then {CONTINUATION_CHARS} more; {N_CHOICES} are needed")
    endings = sorted({ending for _, ending in parts})
    cloze = []
    for i in np.sort(rng.choice(len(parts), min(n_docs, len(parts)), replace=False)):
        context, true = parts[i]
        choices = [true, *rng.choice([e for e in endings if e != true], N_CHOICES - 1, replace=False)]
        order = rng.permutation(N_CHOICES)
        cloze.append({"context": context, "choices": [str(choices[k]) for k in order],
                      "label": int(np.flatnonzero(order == 0)[0])})
    return [
        _write(out_dir, f"{prefix}_ppl", ppl, output_type="loglikelihood_rolling", doc_to_text="",
               doc_to_target="text",
               metric_list=[{"metric": m, "aggregation": agg, "higher_is_better": False} for m, agg in (
                   ("word_perplexity", "weighted_perplexity"), ("byte_perplexity", "weighted_perplexity"),
                   ("bits_per_byte", "bits_per_byte"))]),
        _write(out_dir, f"{prefix}_cloze", cloze, output_type="multiple_choice", doc_to_text="context",
               doc_to_choice="choices", doc_to_target="label", target_delimiter="\n",
               metric_list=[{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")]),
    ]
