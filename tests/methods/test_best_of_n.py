"""Best-of-n: the selection rule and the analytic KL the literature plots against."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.best_of_n import SPEC, best_of_n, bon_kl


def test_reference_registry_and_defaults():
    assert methods.get("best_of_n") is SPEC and SPEC.kind == "decoding" and SPEC.needs == ("proxy_reward",)
    kwargs, expected = SPEC.reference()
    assert torch.equal(SPEC.fn(**kwargs), expected)


def test_picks_the_highest_score_first_on_ties():
    scores = torch.tensor([[0.0, 1.0, 1.0], [-2.0, -3.0, -1.0]])
    assert best_of_n(scores).tolist() == [1, 2] and best_of_n(scores, n=3).tolist() == [1, 2]
    with pytest.raises(ValueError, match="expected n = 4"):
        best_of_n(scores, n=4)


def test_kl_is_zero_for_one_sample_and_grows_like_log_n():
    assert bon_kl(1) == 0.0 and bon_kl(2) == pytest.approx(math.log(2) - 0.5)
    values = [bon_kl(n) for n in (1, 2, 4, 16, 256)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert math.log(256) - 1 < bon_kl(256) < math.log(256)


def test_n_must_be_a_positive_integer():
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            SPEC.hparams({"n": bad})
