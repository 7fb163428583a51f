import numpy as np
import pytest

from lossbench import data
from lossbench.data import transforms


def test_long_tail_counts_match_card():
    # card P4: MNIST-1D n_max = 960, rho = 100 leaves 9 images in the tail class
    counts = transforms.long_tail_counts(960, 10, 100)
    assert counts[0] == 960 and counts[-1] == 9
    assert np.all(np.diff(counts) <= 0)
    # card P1: CIFAR-10-LT rho = 100 has 12 406 training images
    assert transforms.long_tail_counts(5000, 10, 100).sum() == 12406
    assert transforms.long_tail_counts(500, 100, 100).sum() == 10847


def test_long_tail_indices_are_seeded():
    y = np.repeat(np.arange(4), 50)
    a = transforms.long_tail_indices(y, 4, 10, np.random.default_rng(0))
    b = transforms.long_tail_indices(y, 4, 10, np.random.default_rng(0))
    c = transforms.long_tail_indices(y, 4, 10, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.bincount(y[a]), transforms.long_tail_counts(50, 4, 10))


@pytest.mark.parametrize("include_true", [False, True])
def test_symmetric_noise_rate(include_true):
    y = np.repeat(np.arange(10), 2000)
    noisy = transforms.symmetric_noise(y, 10, 0.4, np.random.default_rng(0), include_true=include_true)
    expected = 0.4 * (9 / 10 if include_true else 1.0)
    assert abs((noisy != y).mean() - expected) < 0.01
    # corrupted labels are spread uniformly over the wrong classes
    wrong = noisy[(noisy != y) & (y == 0)]
    assert np.bincount(wrong, minlength=10)[0] == 0 and np.bincount(wrong, minlength=10)[1:].std() < 30


def test_asymmetric_noise_only_flips_mapped_classes():
    y = np.repeat(np.arange(10), 100)
    noisy = transforms.asymmetric_cifar10_noise(y, 10, 0.4, np.random.default_rng(0))
    changed = np.unique(y[noisy != y])
    assert set(changed) <= {9, 2, 4, 3, 5}
    assert np.all(noisy[(y == 9) & (noisy != y)] == 1)


def test_balanced_halves():
    y = np.repeat(np.arange(5), 41)
    val, test = transforms.balanced_halves(y, 5, np.random.default_rng(0))
    assert len(np.intersect1d(val, test)) == 0 and len(val) + len(test) == len(y)
    assert np.all(np.bincount(y[val]) == 20) and np.all(np.bincount(y[test]) == 21)


def test_build_variant_from_prepared_arrays():
    rng = np.random.default_rng(0)
    prepared = {"x_train": rng.normal(size=(1000, 3)).astype(np.float32), "y_train": np.repeat(np.arange(10), 100),
                "x_heldout": rng.normal(size=(200, 3)).astype(np.float32), "y_heldout": np.repeat(np.arange(10), 20),
                "num_classes": np.int64(10)}
    lt = data.build("mnist1d_lt100", prepared, data_seed=5)
    assert lt.class_counts[0] == 100 and lt.class_counts[-1] == 1 and not lt.noisy.any()
    noisy = data.build("mnist1d_sym40", prepared, data_seed=5)
    assert 0.35 < noisy.noisy.mean() < 0.45
    assert np.all(np.bincount(noisy.y_val) == 10)  # clean, balanced evaluation sets
    again = data.build("mnist1d_sym40", prepared, data_seed=5)
    np.testing.assert_array_equal(noisy.y_train, again.y_train)


def test_unknown_dataset_lists_close_matches():
    with pytest.raises(KeyError, match="mnist1d_lt100"):
        data.dataset_entry("mnist1d_lt1000")


def test_registry_sources_are_complete():
    for name in data.names():
        entry = data.source_entry(data.source_of(name))
        assert entry["modality"] in ("vector", "image", "sequence", "text")
        if entry["kind"] == "download":
            assert entry["url"].startswith("https://") and len(entry["md5"]) == 32
