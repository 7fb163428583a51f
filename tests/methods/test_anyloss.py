"""AnyLoss (card C7): hard predictions give 1 - batch metric, range, permutation invariance, gradients."""
import pytest
import torch

from lossbench import methods
from lossbench.methods.anyloss import METRICS, SPEC, anyloss


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _hard_metric(pred, y, k, metric):
    """The batch metric from hard predictions, by counting."""
    n = float(len(y))
    if metric == "accuracy":
        return (pred == y).float().mean().item()
    vals = []
    for c in range(k):
        n_pos = (y == c).sum().item()
        if n_pos == 0:
            continue
        tp = ((pred == c) & (y == c)).sum().item()
        tn = ((pred != c) & (y != c)).sum().item()
        if metric == "balanced_accuracy":
            vals.append(tp / n_pos)
        elif metric == "f1":
            vals.append(2 * tp / (n_pos + (pred == c).sum().item()))
        elif metric == "gmean" and n_pos < n:
            vals.append(tp / n_pos * tn / (n - n_pos))  # the code's surrogate TPR·TNR
    return sum(vals) / len(vals)


def test_reference_matches():
    kwargs, expected = SPEC.reference()
    torch.testing.assert_close(SPEC.fn(**kwargs), expected, atol=1e-5, rtol=0)


def test_registry_and_defaults():
    assert methods.get("anyloss") is SPEC
    assert SPEC.kind == "batch_loss" and SPEC.defaults == {"metric": "f1", "L": 73.0, "link": "sigmoid"}


@pytest.mark.parametrize("metric", METRICS)
def test_hard_predictions_give_one_minus_batch_metric(metric):
    g = _gen(0)
    k, b = 4, 64
    y = torch.randint(0, k, (b,), generator=g)
    pred = torch.where(torch.rand(b, generator=g) < 0.6, y, torch.randint(0, k, (b,), generator=g))
    logits = 40.0 * torch.nn.functional.one_hot(pred, k).float()  # p ∈ {0, 1} in float32
    out = anyloss(logits, y, metric=metric, L=73.0)
    assert out.shape == ()
    assert abs(out.item() - (1.0 - _hard_metric(pred, y, k, metric))) < 1e-4


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("L", [2.0, 73.0])
def test_loss_in_unit_interval(metric, L):
    g = _gen(1)
    for scale in (0.1, 3.0, 30.0):
        logits = torch.randn(32, 5, generator=g) * scale
        y = torch.randint(0, 5, (32,), generator=g)
        out = anyloss(logits, y, metric=metric, L=L).item()
        assert 0.0 <= out <= 1.0


@pytest.mark.parametrize("metric", METRICS)
def test_permutation_invariant(metric):
    g = _gen(2)
    logits, y = torch.randn(40, 3, generator=g), torch.randint(0, 3, (40,), generator=g)
    perm = torch.randperm(40, generator=g)
    torch.testing.assert_close(anyloss(logits[perm], y[perm], metric=metric, L=10.0),
                               anyloss(logits, y, metric=metric, L=10.0))


@pytest.mark.parametrize("metric", METRICS)
def test_finite_nonzero_gradient_at_half(metric):
    logits = torch.zeros(8, 2, requires_grad=True)  # p = 1/2 everywhere
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 0])
    anyloss(logits, y, metric=metric, L=73.0).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_binary_case_matches_paper_formulas():
    # K = 2: the paper's binary formulas with p = P(class 1), positive class 1 (authors' code, s = 1e-5).
    g = _gen(3)
    logits, y = torch.randn(32, 2, generator=g), torch.randint(0, 2, (32,), generator=g)
    L, s = 20.0, 1e-5
    a = torch.sigmoid(L * (torch.softmax(logits, -1)[:, 1] - 0.5))
    yf = y.float()
    n1, n0 = yf.sum(), (1 - yf).sum()
    tp = (yf * a).sum()
    tn = ((1 - yf) * (1 - a)).sum()
    paper = {
        "accuracy": (tp + tn) / 32,
        "balanced_accuracy": (n0 * tp + n1 * tn) / (2 * n1 * n0),
        "gmean": tp * tn / (n1 * n0),
    }
    for metric, value in paper.items():
        torch.testing.assert_close(anyloss(logits, y, metric=metric, L=L), 1 - value, atol=1e-4, rtol=0)
    # f1 is the macro F1 over both classes; the class-1 term is the paper's F1.
    f1_pos = 2 * tp / (n1 + a.sum() + s)
    f1_neg = 2 * tn / (n0 + (1 - a).sum() + s)
    torch.testing.assert_close(anyloss(logits, y, metric="f1", L=L), 1 - (f1_pos + f1_neg) / 2,
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("metric", METRICS)
def test_large_logits_and_single_class_batch_finite(metric):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 1e4], [1e4, 1e4, -1e4]],
                          requires_grad=True)
    for y in (torch.tensor([0, 1, 1, 2]), torch.tensor([1, 1, 1, 1])):
        out = anyloss(logits, y, metric=metric, L=73.0)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(logits.grad).all() and 0.0 <= out.item() <= 1.0


def test_bf16_input_computes_in_float32():
    g = _gen(4)
    logits, y = torch.randn(16, 4, generator=g), torch.randint(0, 4, (16,), generator=g)
    assert anyloss(logits.bfloat16(), y, **SPEC.hparams()).dtype == torch.float32


def test_validate():
    with pytest.raises(ValueError, match="valid: .*accuracy.*f1"):
        SPEC.hparams({"metric": "precision"})
    with pytest.raises(ValueError, match="L must be > 0"):
        SPEC.hparams({"L": 0.0})


def test_softmax_link_starves_gradients_with_many_classes():
    """Why the spec's default link is one-vs-rest sigmoid: with K = 10 softmax probabilities start
    near 1/K, where the amplifier sigmoid(73(p - 1/2)) is flat; sigmoid scores start at 1/2."""
    g = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 10, (256,), generator=g)
    grads = {}
    for link in ("softmax", "sigmoid"):
        logits = (0.01 * torch.randn(256, 10, generator=g)).requires_grad_(True)
        anyloss(logits, targets, metric="f1", L=73.0, link=link).backward()
        grads[link] = logits.grad.abs().max().item()
    assert grads["softmax"] < 1e-8 < 1e-4 < grads["sigmoid"]
