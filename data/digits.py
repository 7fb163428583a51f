"""scikit-learn's bundled digits (8x8 images as 64 features), a stratified train/held-out split."""
from __future__ import annotations

import numpy as np


def prepare(params: dict, raw_dir=None) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # pixel values are 0..16
    x_tr, x_ho, y_tr, y_ho = train_test_split(
        x, y, test_size=float(params["test_fraction"]), stratify=y, random_state=int(params["seed"])
    )
    return {
        "x_train": x_tr, "y_train": y_tr.astype(np.int64),
        "x_heldout": x_ho, "y_heldout": y_ho.astype(np.int64),
        "num_classes": np.int64(10),
    }
