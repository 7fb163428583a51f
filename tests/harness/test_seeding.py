import torch

from lossbench.seeding import derive_seed, seeded_build


def test_derive_seed_is_stable_and_distinct():
    # pinned: changing the hash would silently change every published number
    assert derive_seed("classification", "mnist1d_lt100", 0, "data") == 217409247
    assert derive_seed("a", 1) != derive_seed("a", 2) != derive_seed("b", 1)
    assert 0 <= derive_seed("x") < 2**31


def test_seeded_build_restores_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = seeded_build(lambda: torch.nn.Linear(4, 2), 7)
    b = seeded_build(lambda: torch.nn.Linear(4, 2), 7)
    torch.testing.assert_close(a.weight, b.weight)
    torch.testing.assert_close(torch.rand(3), expected)  # the caller's stream was not consumed
