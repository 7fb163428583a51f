"""MNIST-1D (Greydanus 2020), generated procedurally by the `mnist1d` package.

Only `make_dataset` is used: `get_dataset` downloads a pickle from GitHub, which an offline run
must never do. 12 000 samples give 9 600 train / 2 400 held-out, about 960 per class (card P4).
"""
from __future__ import annotations

import numpy as np


def prepare(params: dict, raw_dir=None) -> dict:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(params["num_samples"])
    args.seed = int(params["seed"])
    d = make_dataset(args)  # seeds numpy's global RNG itself (args.seed)
    return {
        "x_train": d["x"].astype(np.float32), "y_train": d["y"].astype(np.int64),
        "x_heldout": d["x_test"].astype(np.float32), "y_heldout": d["y_test"].astype(np.int64),
        "num_classes": np.int64(10),
    }
