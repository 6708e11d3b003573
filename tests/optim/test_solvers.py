"""CG / PCG / flexible PCG against dense float64 solves."""

import math

import pytest
import torch

from asr_hf.optim.precond import DiagonalPreconditioner, LBFGSPreconditioner
from asr_hf.optim.solvers import DenseOperator, StopReason, conjugate_gradient, martens_grid

DT = torch.float64




def _spd(n: int, cond: float, seed: int = 0) -> torch.Tensor:
    """SPD matrix with eigenvalues log-spaced in [1, cond] and a non-diagonal basis."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    evals = torch.logspace(0, math.log10(cond), n, dtype=DT)
    return (q * evals) @ q.T


def _badly_scaled(n: int, seed: int = 0) -> torch.Tensor:
    """Ill-conditioned mostly by row/column scaling (what a diagonal preconditioner fixes)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.logspace(0, 3, n, dtype=DT)
    return d[:, None] * _spd(n, 10.0, seed) * d[None, :] + 0 * torch.randn(n, n, generator=g, dtype=DT)


def test_martens_grid() -> None:
    assert martens_grid(30) == [5, 7, 9, 11, 15, 19, 25]
    assert all(i == math.ceil(5 * 1.3**j - 1e-9) for j, i in enumerate(martens_grid(250)[:4]))
    assert martens_grid(250)[-1] <= 250


def test_cg_solves_spd_to_tolerance_and_tracks_phi() -> None:
    n = 40
    a = _spd(n, 1e3)
    b = torch.randn(n, dtype=DT)
    res = conjugate_gradient(DenseOperator(a), b, rtol=1e-10, progress_tol=None, max_iters=500)
    assert res.stop_reason == StopReason.RESIDUAL
    exact = torch.linalg.solve(a, b)
    torch.testing.assert_close(res.x, exact, rtol=1e-8, atol=1e-8)
    assert torch.linalg.norm(b - a @ res.x) <= 1e-10 * torch.linalg.norm(b) * 1.0001
    # phi tracked from the residual equals 0.5 x^T A x - b^T x; iterates kept on the grid
    grid = set(martens_grid(500))
    assert [it.iteration for it in res.iterates[:-1]] == [i for i in sorted(grid) if i <= res.iterations][
        : len(res.iterates) - 1
    ]
    for it in res.iterates:
        phi = 0.5 * it.x @ a @ it.x - b @ it.x
        assert abs(it.phi - float(phi)) < 1e-8 * abs(float(phi))
        assert it.phi == res.phis[it.iteration]
    assert all(p1 <= p0 + 1e-12 for p0, p1 in zip(res.phis, res.phis[1:]))  # CG decreases phi


def test_pcg_and_flexible_pcg_with_fixed_preconditioner_agree() -> None:
    n = 30
    a = _badly_scaled(n)
    b = torch.randn(n, dtype=DT)
    m = DiagonalPreconditioner(torch.diagonal(a).clone())
    kw = dict(precond=m, progress_tol=None, max_iters=20, grid=list(range(1, 21)))
    pcg = conjugate_gradient(DenseOperator(a), b, flexible=False, **kw)
    fpcg = conjugate_gradient(DenseOperator(a), b, flexible=True, **kw)
    assert pcg.iterations == fpcg.iterations == 20
    for i1, i2 in zip(pcg.iterates, fpcg.iterates):  # every iterate, not just the answer
        assert i1.iteration == i2.iteration
        torch.testing.assert_close(i1.x, i2.x, rtol=1e-9, atol=1e-12)
    kw = dict(precond=m, progress_tol=None, max_iters=500, rtol=1e-10)
    for flexible in (False, True):
        sol = conjugate_gradient(DenseOperator(a), b, flexible=flexible, **kw).x
        torch.testing.assert_close(sol, torch.linalg.solve(a, b), rtol=1e-7, atol=1e-9)
    # and preconditioning pays: plain CG needs more iterations on this badly scaled system
    cg = conjugate_gradient(DenseOperator(a), b, rtol=1e-8, progress_tol=None, max_iters=2000)
    pcg8 = conjugate_gradient(DenseOperator(a), b, precond=m, rtol=1e-8, progress_tol=None, max_iters=2000)
    assert pcg8.iterations < cg.iterations


def test_flexible_pcg_with_changing_lbfgs_preconditioner_converges() -> None:
    n = 60
    a = _spd(n, 1e4, seed=2)
    b = torch.randn(n, dtype=DT)
    prec = LBFGSPreconditioner(n, history=10, source="in_solve")
    prec.begin_solve(0.0)
    res = conjugate_gradient(
        DenseOperator(a), b, precond=prec, flexible=True, observe=prec.observe, rtol=1e-9, progress_tol=None,
        max_iters=1000,
    )
    assert res.stop_reason == StopReason.RESIDUAL
    torch.testing.assert_close(res.x, torch.linalg.solve(a, b), rtol=1e-6, atol=1e-6)
    assert len(prec.memory) == 10
    # every pair satisfies the secant relation y = A s
    for s, y in zip(prec.memory._s, prec.memory._y):
        torch.testing.assert_close(y, a @ s)


def test_lbfgs_pairs_from_a_previous_solve_cut_iterations() -> None:
    n = 80
    a = _spd(n, 1e4, seed=3)
    g = torch.Generator().manual_seed(5)
    b1, b2 = torch.randn(n, generator=g, dtype=DT), torch.randn(n, generator=g, dtype=DT)
    kw = dict(rtol=1e-6, progress_tol=None, max_iters=1000, flexible=True)
    plain = conjugate_gradient(DenseOperator(a), b2, **kw)
    prec = LBFGSPreconditioner(n, history=40, pairs_per_solve=40)
    prec.begin_solve(0.0)
    conjugate_gradient(DenseOperator(a), b1, precond=prec, observe=prec.observe, **kw)
    prec.end_solve()
    prec.begin_solve(0.0)
    warm = conjugate_gradient(DenseOperator(a), b2, precond=prec, observe=prec.observe, **kw)
    assert warm.iterations < 0.8 * plain.iterations


def test_martens_progress_rule() -> None:
    n = 200
    a = _spd(n, 1e5, seed=4)
    b = torch.randn(n, dtype=DT)
    res = conjugate_gradient(DenseOperator(a), b, max_iters=250, progress_tol=5e-4)
    assert res.stop_reason == StopReason.PROGRESS

    def rule(i: int) -> bool:
        k = max(10, math.ceil(0.1 * i))
        return i > k and res.phis[i] < 0 and (res.phis[i] - res.phis[i - k]) / res.phis[i] < k * 5e-4

    assert rule(res.iterations)
    assert not any(rule(i) for i in range(1, res.iterations))
    capped = conjugate_gradient(DenseOperator(a), b, max_iters=7, progress_tol=5e-4)
    assert capped.stop_reason == StopReason.MAX_ITERS and capped.iterations == 7


def test_negative_curvature_is_detected_and_not_followed() -> None:
    a = torch.diag(torch.tensor([2.0, 1.0, -1.0], dtype=DT))
    b = torch.tensor([1.0, 1.0, 1.0], dtype=DT)
    res = conjugate_gradient(DenseOperator(a), b, progress_tol=None, max_iters=10)
    assert res.stop_reason == StopReason.NEGATIVE_CURVATURE and res.negative_curvature
    # no step was taken along the bad direction: phi only decreased
    assert all(p1 <= p0 for p0, p1 in zip(res.phis, res.phis[1:]))
    x = res.x
    assert float(0.5 * x @ a @ x - b @ x) <= 0
    res0 = conjugate_gradient(DenseOperator(-torch.eye(3, dtype=DT)), b, progress_tol=None)
    assert res0.iterations == 0 and torch.all(res0.x == 0)


def test_warm_start_at_solution_stops_immediately() -> None:
    a = _spd(10, 10.0)
    b = torch.randn(10, dtype=DT)
    x = torch.linalg.solve(a, b)
    res = conjugate_gradient(DenseOperator(a), b, x0=x, rtol=1e-8)
    assert res.iterations == 0 and res.stop_reason == StopReason.RESIDUAL


@pytest.mark.parametrize("flexible", [False, True])
def test_segmented_cg_equals_independent_block_solves(flexible: bool) -> None:
    sizes = [5, 8, 3, 6]
    blocks = [_spd(s, 10.0 ** (j + 1), seed=j) for j, s in enumerate(sizes)]
    a = torch.block_diag(*blocks)
    seg = torch.cat([torch.full((s,), j, dtype=torch.int64) for j, s in enumerate(sizes)])
    b = torch.randn(a.shape[0], dtype=DT)
    diag = DiagonalPreconditioner(torch.diagonal(a).clone())
    res = conjugate_gradient(
        DenseOperator(a), b, precond=diag, flexible=flexible, segments=seg, num_segments=len(sizes),
        rtol=1e-10, progress_tol=None, max_iters=100,
    )
    assert res.stop_reason == StopReason.RESIDUAL
    torch.testing.assert_close(res.x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-9)
    off = 0
    for j, (s, blk) in enumerate(zip(sizes, blocks)):
        sl = slice(off, off + s)
        alone = conjugate_gradient(
            DenseOperator(blk), b[sl], precond=DiagonalPreconditioner(torch.diagonal(blk).clone()),
            flexible=flexible, rtol=1e-10, progress_tol=None, max_iters=100,
        )
        # each block stops on its own (the last iteration may flip on rounding at the tolerance)
        assert abs(res.block_iterations[j] - alone.iterations) <= 1
        torch.testing.assert_close(res.x[sl], alone.x, rtol=1e-8, atol=1e-10)
        off += s
    # phi of the whole is the sum of the blocks' phis
    x = res.x
    assert abs(res.phis[-1] - float(0.5 * x @ a @ x - b @ x)) < 1e-9
    assert len(set(res.block_iterations)) > 1


def test_cg_scalars_accumulate_in_float64_for_float32_vectors() -> None:
    """A float32 dot of a million same-sign terms loses ~1e-5 relative; CG's phi and step
    sizes must not (its scalars accumulate in float64, the vectors stay float32)."""
    n = 2_000_000
    g = torch.Generator().manual_seed(0)
    diag = torch.rand(n, generator=g, dtype=DT) + 0.5
    b = torch.rand(n, generator=g, dtype=DT) + 0.5

    class Diag:
        def __init__(self, dgl):
            self.dgl = dgl

        def matvec(self, v):
            return self.dgl * v

    ref = conjugate_gradient(Diag(diag), b, max_iters=3, progress_tol=None)
    f32 = conjugate_gradient(Diag(diag.float()), b.float(), max_iters=3, progress_tol=None)
    assert f32.x.dtype == torch.float32
    for p64, p32 in zip(ref.phis, f32.phis):
        assert abs(p32 - p64) <= 1e-6 * abs(p64) + 1e-9
