"""FLAT: every divergence pushes the template answer's probability up and the forget answer's down,
no reference model enters, the closed forms of the code's four usable divergences, and the loss
reads mean token probabilities (length-normalised, padding ignored)."""
import math

import pytest
import torch

from lossbench import methods
from lossbench.methods.flat import DIVERGENCES, SPEC, flat_loss, mean_token_probability

from tests.methods.preference_helpers import close


def _inputs(p_forget, p_template, length=3):
    """Answers whose every real token has the given probability, padded to 5 positions."""
    tokens = torch.log(torch.tensor([[[p_forget] * 5, [p_template] * 5]], dtype=torch.float64))
    mask = (torch.arange(5) < length).double().expand(1, 2, 5).clone()
    return tokens, mask


def test_reference_registry_and_defaults():
    assert methods.get("flat") is SPEC and SPEC.kind == "unlearning" and SPEC.needs == ("template_answers",)
    assert SPEC.hparams() == {"divergence": "tv"}
    kwargs, expected = SPEC.reference()
    close(SPEC.fn(**kwargs), expected)


@pytest.mark.parametrize("divergence,expected", [
    ("tv", lambda e, f: -math.tanh(e) / 2 + math.tanh(f) / 2),
    ("kl", lambda e, f: -e + math.exp(f - 1)),
    ("js", lambda e, f: math.log1p(math.exp(-e)) + math.log1p(math.exp(f)) - 2 * math.log(2)),
    ("pearson", lambda e, f: -e + f * f / 4 + f),
])
def test_closed_forms(divergence, expected):
    tokens, mask = _inputs(0.6, 0.1)
    out = flat_loss(None, None, tokens, mask, divergence=divergence)
    assert out.item() == pytest.approx(expected(0.1, 0.6), rel=1e-6)


@pytest.mark.parametrize("divergence", sorted(DIVERGENCES))
@pytest.mark.parametrize("p_forget,p_template", [(0.9, 0.05), (0.3, 0.3), (0.01, 0.8)])
def test_gradients_raise_the_template_and_lower_the_forget_answer(divergence, p_forget, p_template):
    tokens, mask = _inputs(p_forget, p_template)
    tokens.requires_grad_(True)
    flat_loss(None, None, tokens, mask, divergence=divergence).sum().backward()
    g = tokens.grad[0]
    assert (g[0, :3] > 0).all() and (g[1, :3] < 0).all()  # descent lowers log p(forget), raises log p(template)
    assert (g[:, 3:] == 0).all()  # padding gets nothing


def test_no_reference_model_and_length_normalised():
    tokens, mask = _inputs(0.5, 0.2, length=2)
    a = flat_loss(torch.zeros(1), torch.zeros(1), tokens, mask, divergence="tv")
    b = flat_loss(torch.full((1,), -99.0), torch.full((1,), 7.0), tokens, mask, divergence="tv")
    close(a, b)
    longer, mask4 = _inputs(0.5, 0.2, length=4)
    close(flat_loss(None, None, longer, mask4, divergence="tv"), a)  # same per-token probabilities
    close(mean_token_probability(tokens, mask), torch.tensor([[0.5, 0.2]], dtype=torch.float32))


def test_unknown_divergence_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="valid"):
        SPEC.hparams({"divergence": "hellinger"})
