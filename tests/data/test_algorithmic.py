"""The grokking track's algorithmic datasets: exact labels, the reference input encoding, seeded
train/val/test splits (val carved out of the held-out examples; the training set unchanged)."""
import numpy as np
import pytest

from lossbench import data
from lossbench.data import algorithmic


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
    assert (len(train), len(test)) == (5107, 7662)  # the reference code's int(0.4 · 12 769), held out
    assert not set(train) & set(test)
    again, _ = algorithmic.split(arrays, 0.4, seed=1)
    other, _ = algorithmic.split(arrays, 0.4, seed=2)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
    assert "40%" in data.describe("mod113_add_f40")
    with pytest.raises(ValueError, match="empty split"):
        algorithmic.split(arrays, 0.0, seed=1)


def _old_split(n: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The train/test split as runs computed it before the validation split (track version 1)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(np.floor(train_fraction * n))
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


@pytest.mark.parametrize("source, train_fraction", [("mod113_add", 0.4), ("mod113_add", 0.7),
                                                    ("sparse_parity_3of40", 0.5)])
def test_train_val_test_partition_every_example_and_train_is_unchanged(source, train_fraction):
    arrays = data.prepare_source(source)
    n = len(arrays["y"])
    for seed in (0, 1, 7):
        train, val, test = algorithmic.split_train_val_test(arrays, train_fraction, algorithmic.VAL_FRACTION, seed)
        assert len(val) == int(np.floor(0.1 * n)) and len(train) + len(val) + len(test) == n
        everything = np.concatenate([train, val, test])
        np.testing.assert_array_equal(np.sort(everything), np.arange(n))  # disjoint, and all examples
        for part in (train, val, test):
            assert (np.diff(part) > 0).all()  # sorted, no repeats
        old_train, old_test = _old_split(n, train_fraction, seed)
        np.testing.assert_array_equal(train, old_train)  # the training set of version 1
        assert set(val) | set(test) == set(old_test)  # val is carved out of the old test set only
        np.testing.assert_array_equal(algorithmic.split(arrays, train_fraction, seed)[0], train)
        # a different val size keeps the training set too
        np.testing.assert_array_equal(algorithmic.split_train_val_test(arrays, train_fraction, 0.2, seed)[0], train)


def test_the_validation_split_is_seeded():
    arrays = data.prepare_source("mod113_add")
    one = algorithmic.split_train_val_test(arrays, 0.4, 0.1, seed=3)
    again = algorithmic.split_train_val_test(arrays, 0.4, 0.1, seed=3)
    other = algorithmic.split_train_val_test(arrays, 0.4, 0.1, seed=4)
    for a, b in zip(one, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(one[1], other[1])
    assert tuple(map(len, one)) == (5107, 1276, 6386)  # floor(0.4 · 12 769), floor(0.1 · 12 769), the rest
    # not the first indices of the held-out set: a random slice of it
    held_out = algorithmic.split(arrays, 0.4, seed=3)[1]
    assert not np.array_equal(one[1], held_out[:len(one[1])])


def test_a_val_fraction_leaving_no_test_or_no_val_examples_is_refused():
    arrays = algorithmic.modular(7, "add")  # 49 pairs
    with pytest.raises(ValueError, match="no test"):
        algorithmic.split_train_val_test(arrays, 0.4, 0.62, seed=0)  # 19 + 30 = 49
    with pytest.raises(ValueError, match="empty validation"):
        algorithmic.split_train_val_test(arrays, 0.4, 0.01, seed=0)  # floor(0.49) = 0 pairs
    with pytest.raises(ValueError, match="empty split"):
        algorithmic.split_train_val_test(arrays, 0.0, 0.1, seed=0)
    train, val, test = algorithmic.split_train_val_test(arrays, 0.4, 0.55, seed=0)  # 19 + 26 + 4
    assert (len(train), len(val), len(test)) == (19, 26, 4)
