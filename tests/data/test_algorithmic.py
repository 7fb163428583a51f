"""The grokking track's algorithmic datasets: exact labels, the reference input encoding, seeded splits."""
import numpy as np
import pytest

import data
from data import algorithmic


@pytest.mark.parametrize("op, fn", [("add", lambda a, b: (a + b) % 7), ("sub", lambda a, b: (a - b) % 7),
                                    ("mul", lambda a, b: (a * b) % 7)])
def test_modular_covers_every_pair_with_one_hot_inputs(op, fn):
    arrays = algorithmic.modular(7, op)
    x, y = arrays["x"], arrays["y"]
    assert x.shape == (49, 14) and x.dtype == np.float32 and int(arrays["num_classes"]) == 7
    a, b = x[:, :7].argmax(1), x[:, 7:].argmax(1)
    assert (x.sum(1) == 2).all() and len({(i, j) for i, j in zip(a, b)}) == 49
    np.testing.assert_array_equal(y, fn(a, b))


def test_sparse_parity_is_distinct_and_labelled_by_the_parity_bits():
    arrays = algorithmic.sparse_parity(bits=12, parity_bits=3, samples=500, seed=0)
    x, y = arrays["x"], arrays["y"]
    assert x.shape == (500, 12) and len({r.tobytes() for r in x}) == 500
    np.testing.assert_array_equal(y, x[:, :3].sum(1).astype(int) % 2)
    np.testing.assert_array_equal(x, algorithmic.sparse_parity(12, 3, 500, 0)["x"])  # fixed draw
    with pytest.raises(ValueError):
        algorithmic.sparse_parity(bits=3, parity_bits=3, samples=9, seed=0)


def test_registered_sources_and_the_reference_split_size():
    arrays = data.prepare_source("mod113_add")
    assert arrays["x"].shape == (113 * 113, 226)
    train, test = algorithmic.split(arrays, data.dataset_entry("mod113_add_f40")["train_fraction"], seed=1)
    assert (len(train), len(test)) == (5107, 7662)  # the reference code's int(0.4 · 12 769)
    assert not set(train) & set(test)
    again, _ = algorithmic.split(arrays, 0.4, seed=1)
    other, _ = algorithmic.split(arrays, 0.4, seed=2)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
    assert "40%" in data.describe("mod113_add_f40")
    with pytest.raises(ValueError, match="empty split"):
        algorithmic.split(arrays, 0.0, seed=1)
