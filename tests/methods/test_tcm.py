"""TCM (MS + threshold-consistent margins): the regulariser against pytorch-metric-learning's
ThresholdConsistentMarginLoss, its zero case, its gradient signs, λ = 0 as plain MS, and a tiny open-world
run."""
import pytest
import torch

from lossbench.methods.multi_similarity import SPEC as MS
from lossbench.methods.multi_similarity import multi_similarity
from lossbench.methods.tcm import SPEC, tcm, tcm_from_similarity
from tests.methods.test_multi_similarity import _batch

MARGINS = dict(m_pos=0.9, m_neg=0.5, lambda_pos=1.0, lambda_neg=1.0)
HP = {**MS.defaults, **MARGINS}


def _regulariser(emb, y, **margins):
    """tcm − multi_similarity: the TCM term alone, as the method computes it."""
    hp = {**HP, **margins}
    return tcm(emb, y, **hp) - multi_similarity(emb, y, **MS.defaults)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margins", [MARGINS, dict(m_pos=0.7, m_neg=0.3, lambda_pos=0.5, lambda_neg=2.0)])
def test_regulariser_agrees_with_pytorch_metric_learning(seed, margins):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.losses import ThresholdConsistentMarginLoss

    emb, y = _batch(seed, spread=0.5 + seed / 3)
    lib = ThresholdConsistentMarginLoss(lambda_plus=margins["lambda_pos"], lambda_minus=margins["lambda_neg"],
                                        margin_plus=margins["m_pos"], margin_minus=margins["m_neg"])
    a, b = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    ours, theirs = _regulariser(a, y, **margins), lib(b, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_zero_when_every_pair_is_beyond_its_margin():
    # positives at S ≥ m⁺, negatives at S ≤ m⁻: nothing to penalise, no gradient
    y = torch.tensor([0, 0, 1, 1])
    sim = torch.tensor([[1.0, 0.95, 0.45, 0.1], [0.95, 1.0, -0.3, 0.2], [0.45, -0.3, 1.0, 0.92],
                        [0.1, 0.2, 0.92, 1.0]], requires_grad=True)
    reg = tcm_from_similarity(sim, y, **MARGINS)
    assert reg == 0
    reg.backward()
    assert torch.all(sim.grad == 0)
    # pairs exactly at their margins still add 0 (they count as hard, as in pytorch-metric-learning, with a
    # zero term)
    at = sim.detach().clone()
    at[2, 3] = at[3, 2] = 0.9
    at[0, 2] = at[2, 0] = 0.5
    assert tcm_from_similarity(at, y, **MARGINS) == 0


def test_gradient_pulls_violating_positives_up_and_pushes_violating_negatives_down():
    y = torch.tensor([0, 0, 0, 1, 1])
    sim = torch.eye(5)
    sim[0, 1:] = torch.tensor([0.95, 0.6, 0.7, 0.2])  # positives 0.95 (fine), 0.6 (hard); negatives 0.7 (hard), 0.2
    sim = ((sim + sim.T) - torch.diag(sim.diagonal())).requires_grad_(True)
    tcm_from_similarity(sim, y, **MARGINS).backward()
    g = sim.grad[0]
    assert g[1] == 0 and g[2] < 0  # descent raises the hard positive's similarity, leaves the easy one
    assert g[3] > 0 and g[4] == 0  # and lowers the hard negative's
    # each term is a mean over its violating pairs: slope 1 / (their number) per pair
    pos, neg = (y[:, None] == y[None]) & ~torch.eye(5, dtype=torch.bool), y[:, None] != y[None]
    n_hard_pos = int((pos & (sim <= 0.9)).sum())
    n_hard_neg = int((neg & (sim >= 0.5)).sum())
    assert g[2] == pytest.approx(-1 / n_hard_pos) and g[3] == pytest.approx(1 / n_hard_neg)


def test_lambda_zero_is_plain_multi_similarity_exactly():
    emb, y = _batch(2)
    a, b = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    ours = tcm(a, y, **{**HP, "lambda_pos": 0.0, "lambda_neg": 0.0})
    base = multi_similarity(b, y, **MS.defaults)
    assert torch.equal(ours, base)
    ours.backward()
    base.backward()
    assert torch.equal(a.grad, b.grad)


def test_defaults_and_reference():
    assert SPEC.defaults == HP  # MS's own defaults plus the paper's m⁺ = 0.9, m⁻ = 0.5, λ⁺ = λ⁻ = 1
    kw, expected = SPEC.reference()
    torch.testing.assert_close(SPEC.fn(**kw), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="lambda_pos"):
        SPEC.hparams({"lambda_pos": -1.0})


def test_an_open_world_run_trains_and_evaluates_end_to_end(tmp_path):
    from tests.harness.test_retrieval import test_an_open_world_run_trains_and_evaluates_end_to_end as run

    run(tmp_path, "tcm")
