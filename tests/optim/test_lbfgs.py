import torch

from asr_hf.optim.lbfgs import LBFGSMemory


def _spd(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a @ a.T + n * torch.eye(n, dtype=torch.float64)


def test_two_loop_equals_explicit_bfgs_matrix():
    n = 7
    a = _spd(n)
    mem = LBFGSMemory(history=4)
    g = torch.Generator().manual_seed(1)
    for _ in range(6):  # more pairs than the memory holds: oldest are dropped
        s = torch.randn(n, generator=g, dtype=torch.float64)
        assert mem.push(s, a @ s)
    assert len(mem) == 4
    h = mem.dense(n)
    v = torch.randn(n, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(mem.apply(v), h @ v)
    torch.testing.assert_close(mem.apply(v[:, 0]), h @ v[:, 0])


def test_secant_equation_holds_for_newest_pair():
    n = 5
    a = _spd(n, 3)
    mem = LBFGSMemory(history=10)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        s = torch.randn(n, generator=g, dtype=torch.float64)
        mem.push(s, a @ s)
    torch.testing.assert_close(mem.apply(a @ s), s)


def test_full_memory_recovers_inverse_on_quadratic():
    # n conjugate directions through BFGS give the exact inverse of a quadratic's Hessian.
    n = 6
    a = _spd(n, 4)
    mem = LBFGSMemory(history=n)
    evals, evecs = torch.linalg.eigh(a)
    for i in range(n):
        s = evecs[:, i]
        mem.push(s, a @ s)
    torch.testing.assert_close(mem.dense(n), torch.linalg.inv(a))


def test_rejects_non_positive_curvature_and_round_trips_state():
    mem = LBFGSMemory(history=3)
    s = torch.ones(4, dtype=torch.float64)
    assert not mem.push(s, -s)
    assert len(mem) == 0
    assert mem.push(s, 2 * s)
    clone = LBFGSMemory(history=1)
    clone.load_state_dict(mem.state_dict())
    v = torch.arange(4.0, dtype=torch.float64)
    torch.testing.assert_close(clone.apply(v), mem.apply(v))
