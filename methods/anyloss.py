"""AnyLoss. Han, Moniz, Chawla, "AnyLoss: Transforming Classification Metrics into Loss Functions",
KDD 2024, arXiv:2405.14745.

docs/methods/anyloss.md. A batch-level loss: the amplifier A(p) = sigmoid(L(p - ½))
pushes probabilities toward {0, 1}, the batch's soft confusion entries are built from A, and the loss
is 1 - metric. +1e-5 in denominators, as in the authors' code (doheonhan/anyloss_extension).

The paper is binary. Our multi-class extension (not from the paper) uses p = softmax(z) and per-class
one-vs-rest entries TP_c = Σ_i y_ic A_ic, FP_c = Σ_i A_ic - TP_c, FN_c = n_c - TP_c,
TN_c = (B - n_c) - FP_c, with n_c the class count in the batch:

    accuracy           Σ_c TP_c / B                       (multi-class accuracy)
    balanced_accuracy  mean_c TP_c / n_c                   (mean per-class recall, the benchmark metric)
    f1                 mean_c 2TP_c / (n_c + Σ_i A_ic)     (macro F1)
    gmean              mean_c TP_c·TN_c / (n_c(B - n_c))   (code's G-mean surrogate, one-vs-rest macro)

Class means run over classes present in the batch (and, for gmean, not filling it), like sklearn's
macro averages. With K = 2 the softmax gives A_i0 = 1 - A_i1, so accuracy, balanced_accuracy and gmean
equal the paper's binary formulas exactly; f1 becomes the macro F1 of both classes, not the paper's
positive-class F1. gmean is the code's surrogate TPR·TNR (no square root): it is the square of the
G-mean, and it has a finite gradient when a class is missed entirely.

Link: `link="softmax"` is the form above (and the paper's, for K = 2). The spec's default is
`link="sigmoid"`, p_ic = sigmoid(z_ic), i.e. K independent one-vs-rest binary scores. Reason
(measured here): with the softmax link and K = 10, p ≈ 1/K at initialisation, so A(p) =
sigmoid(73(0.1 - ½)) ≈ 1e-13 and the gradient vanishes; both embedded 10-class datasets then stay
at chance level. One-vs-rest sigmoids start at p = ½, where the amplifier has its slope, as in the
binary paper.

Default L = 73: the value set in the authors' original-paper notebooks ("AnyLoss_org" learning-curve
and valid-L notebooks in doheonhan/anyloss_extension); their README gives the range [2, 70] and the
extension's 102-dataset runs use L = 30. Batch size matters (the metric is per batch): use >= 256.
Default metric f1: the first AnyLoss example in the authors' README, and an imbalance-aware target.
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_positive

METRICS = ("accuracy", "f1", "balanced_accuracy", "gmean")
_S = 1e-5  # the authors' denominator guard


def _masked_mean(values, mask):
    return (values * mask).sum() / mask.sum().clamp_min(1)


LINKS = ("softmax", "sigmoid")


def anyloss(logits, targets, *, metric: str, L: float, link: str = "softmax"):
    z = logits.float()
    p = torch.sigmoid(z) if link == "sigmoid" else torch.softmax(z, -1)
    amp = torch.sigmoid(L * (p - 0.5))
    y = F.one_hot(targets, p.shape[-1]).float()
    batch = float(p.shape[0])
    n_pos = y.sum(0)
    n_neg = batch - n_pos
    tp = (y * amp).sum(0)
    if metric == "accuracy":
        return 1.0 - tp.sum() / batch
    present = (n_pos > 0).float()
    if metric == "balanced_accuracy":
        return 1.0 - _masked_mean(tp / (n_pos + _S), present)
    if metric == "f1":
        return 1.0 - _masked_mean(2.0 * tp / (n_pos + amp.sum(0) + _S), present)
    if metric == "gmean":
        tn = n_neg - (amp.sum(0) - tp)
        return 1.0 - _masked_mean(tp * tn / (n_pos * n_neg + _S), present * (n_neg > 0).float())
    raise ValueError(f"anyloss: unknown metric {metric!r}; valid: {METRICS}")


def _validate(hp):
    if hp["metric"] not in METRICS:
        raise ValueError(f"anyloss: unknown metric {hp['metric']!r}; valid: {METRICS}")
    if hp["link"] not in LINKS:
        raise ValueError(f"anyloss: unknown link {hp['link']!r}; valid: {LINKS}")
    require_positive("anyloss", hp, "L")


def _reference():
    # Worked in float64. K = 2, logits [0, z] with z = [0.4, -0.4, 0.2, -1.0], y = [1, 0, 1, 0], L = 10:
    # p_1 = sigmoid(z), A_1 = sigmoid(10(p_1 - ½)) = [0.728471, 0.271529, 0.622069, 0.090250],
    # A_0 = 1 - A_1. F1 class 1 = 2·1.350540/(2 + 1.712319 + 1e-5) = 0.727597,
    # F1 class 0 = 2·1.638221/(2 + 2.287681 + 1e-5) = 0.764150; loss = 1 - mean = 0.254126.
    kw = dict(logits=torch.tensor([[0.0, 0.4], [0.0, -0.4], [0.0, 0.2], [0.0, -1.0]]),
              targets=torch.tensor([1, 0, 1, 0]), metric="f1", L=10.0)
    return kw, torch.tensor(0.254126)


SPEC = MethodSpec(
    name="anyloss", kind="batch_loss", fn=anyloss,
    # L from the authors' original-paper notebooks; sigmoid link: our multi-class choice (docstring)
    defaults={"metric": "f1", "L": 73.0, "link": "sigmoid"},
    search={"L": ("choice", 10.0, 30.0, 73.0), "metric": ("choice", "f1", "balanced_accuracy")},
    paper="Han, Moniz, Chawla, KDD 2024, arXiv:2405.14745", url="https://arxiv.org/abs/2405.14745",
    docs="anyloss", version=1, reference=_reference, validate=_validate,
    summary="1 - a batch metric computed from an amplified soft confusion matrix (one-vs-rest)",
)
