"""Best-of-n overoptimisation and the ensemble objectives (lossbench/overopt.py)."""
import itertools
import math

import numpy as np
import pytest

from lossbench import overopt


def test_bon_kl_is_zero_at_one_and_grows_like_log_n():
    assert overopt.bon_kl(1) == 0.0
    assert overopt.bon_kl(2) == pytest.approx(math.log(2) - 0.5)
    kl = overopt.bon_kl(np.array([1, 2, 4, 64, 1024]))
    assert (np.diff(kl) > 0).all() and kl[-1] == pytest.approx(math.log(1024) - 1023 / 1024)


@pytest.mark.parametrize("N,n", [(6, 1), (6, 2), (6, 3), (6, 6), (7, 4)])
def test_the_estimator_equals_the_average_over_every_n_subset(N, n):
    rng = np.random.default_rng(N * 10 + n)
    key, gold = rng.normal(size=(3, N)), rng.normal(size=(3, N))
    est = overopt.bon_expectation(key, {"gold": gold}, [n])[n]["gold"]
    brute = np.mean([np.mean([g[list(s)][np.argmax(k[list(s)])] for s in itertools.combinations(range(N), n)])
                     for k, g in zip(key, gold)])
    assert est == pytest.approx(brute, abs=1e-12)
    assert overopt.bon_weights(N, n).sum() == pytest.approx(1.0)


def test_best_of_n_with_the_gold_reward_itself_never_overoptimises():
    rng = np.random.default_rng(0)
    gold = rng.normal(size=(50, 64))
    means = [v["gold"] for v in overopt.bon_expectation(gold, {"gold": gold}, overopt.bon_ns(64)).values()]
    assert all(b > a for a, b in zip(means, means[1:]))  # gold is monotone in n (card test idea)
    assert means[0] == pytest.approx(gold.mean())  # best-of-1 is π_ref


def test_wco_is_below_the_mean_below_the_max_and_uwo_penalises_disagreement():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5, 4, 8))
    wco, mean = overopt.objective(z, "wco"), overopt.objective(z, "mean")
    assert (wco <= mean).all() and (mean <= z.max(0)).all() and (wco <= z).all()  # WCO ≤ every member
    assert np.allclose(overopt.objective(z, "uwo", lam=0.0), mean)
    agree = np.repeat(z[:1], 5, 0)  # members that agree: the variance term vanishes, UWO = mean = WCO
    assert np.allclose(overopt.objective(agree, "uwo", lam=3.0), overopt.objective(agree, "mean"))
    assert np.allclose(overopt.objective(agree, "wco"), agree[0])
    assert (overopt.objective(z, "uwo", lam=1.0) < mean).all()
    with pytest.raises(ValueError, match="valid"):
        overopt.objective(z, "max")


def test_members_are_standardised_on_the_reference_samples():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(3, 100)) * np.array([[1.0], [10.0], [0.1]]) + np.array([[0.0], [5.0], [-2.0]])
    z = overopt.standardise(ref, ref)
    assert np.allclose(z.mean(1), 0) and np.allclose(z.std(1), 1)
    flat = np.zeros((2, 5))
    assert np.isfinite(overopt.standardise(flat, flat)).all()  # a constant member: no division by zero


def test_a_noisy_proxy_overoptimises_and_the_conservative_ensemble_does_not():
    # gold = true quality; each member sees it plus its own heavy-tailed error on a few samples (the
    # errors a learnt RM makes): best-of-n of one member finds its errors as n grows, the minimum
    # over independent members does not
    rng = np.random.default_rng(3)
    P, N, M = 200, 256, 5
    gold = rng.normal(size=(P, N))
    err = rng.standard_t(1.5, size=(M, P, N))
    members = gold[None] + err
    rows = overopt.curves(members, members.reshape(M, -1), gold, lam=1.0)
    at = {(r["objective"], r["n"]): r for r in rows}
    drop = {k: max(at[(k, n)]["gold"] for n in overopt.bon_ns(N)) - at[(k, N)]["gold"] for k in overopt.OBJECTIVES}
    assert drop["single"] > 0.05 and drop["wco"] < drop["single"] / 3
    assert at[("wco", N)]["gold"] > at[("single", N)]["gold"]
    assert all(at[("single", n)]["proxy"] < at[("single", 2 * n)]["proxy"] for n in (1, 2, 4, 8, 16, 32, 64, 128))
