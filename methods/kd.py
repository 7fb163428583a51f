"""Knowledge distillation. Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
Network", arXiv:1503.02531, §2: the baseline of the distillation cards C13-C15 in
docs/methods/kd.md.

loss_i = (1 − α)·CE(z_i, y_i) + α·T²·KL(softmax(t_i/T) ‖ softmax(z_i/T)), t the frozen teacher's
logits; T² keeps the soft term's gradient scale independent of T (paper §2). The paper gives no
single α or T. Defaults α = 0.9, T = 4 are the CRD benchmark's KD setting *(code)*, read in
HobbitLong/RepDistiller: scripts/run_cifar_distill.sh runs KD with CE weight `-r 0.1` and KD weight
`-a 0.9`, train_student.py has `--kd_T 4`; its DistillKL is the same T²-scaled KL(teacher ‖ student).

`tempered_kl` is the shared softmax-KD term; methods/dhkd.py imports it.
"""
import torch
import torch.nn.functional as F

from lossbench.methods.base import MethodSpec, require_in, require_positive
from lossbench.methods.erm import cross_entropy


def tempered_kl(teacher_logits, student_logits, temperature: float):
    """Per-example T²·KL(softmax(t/T) ‖ softmax(s/T)) [B], float32; 0 iff s − t is constant."""
    log_q = F.log_softmax(teacher_logits.float() / temperature, -1)
    log_p = F.log_softmax(student_logits.float() / temperature, -1)
    return temperature ** 2 * (log_q.exp() * (log_q - log_p)).sum(-1)


def kd(logits, targets, *, teacher_logits, alpha: float, temperature: float):
    return (1 - alpha) * cross_entropy(logits, targets) + alpha * tempered_kl(teacher_logits, logits, temperature)


def _validate(hp):
    require_in("kd", hp, "alpha", 0, 1, closed_high=True)
    require_positive("kd", hp, "temperature")


def _reference():
    # z = [2, 0], t = [0, 2], y 0, α 0.5, T 1: CE 0.126928; KL(q ‖ p) with q = (0.119203, 0.880797),
    # p = (0.880797, 0.119203): Σ q log(q/p) = 1.523188 (float64); 0.5·0.126928 + 0.5·1.523188 = 0.825058
    return (dict(logits=torch.tensor([[2.0, 0.0]]), targets=torch.tensor([0]), teacher_logits=torch.tensor([[0.0, 2.0]]),
                 alpha=0.5, temperature=1.0), torch.tensor([0.825058]))


SPEC = MethodSpec(
    name="kd", kind="loss", fn=kd, defaults={"alpha": 0.9, "temperature": 4.0},
    search={"alpha": ("uniform", 0.5, 1.0), "temperature": ("uniform", 1.0, 8.0)},
    needs=("teacher_logits",), teacher="stage",
    paper="Hinton et al. 2015, arXiv:1503.02531", url="https://arxiv.org/abs/1503.02531", docs="kd",
    reference=_reference, validate=_validate,
    summary="Hinton KD: (1 − α)·CE + α·T²·KL(teacher ‖ student) at temperature T",
)
