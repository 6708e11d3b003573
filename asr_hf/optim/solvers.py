"""Krylov solvers for ``A x = b`` with a symmetric positive (semi-)definite operator.

The solvers know nothing about networks: ``A`` is anything with ``matvec`` (a
:class:`LinearOperator`), vectors are flat 1-D tensors of length ``n``.

:func:`conjugate_gradient` is preconditioned CG in the form Hessian-free
optimization needs (Martens 2010):

* it minimises the quadratic ``phi(x) = 0.5 x^T A x - b^T x`` and tracks ``phi`` of
  every iterate for free from the residual: with ``r = b - A x``,
  ``phi(x) = -0.5 x^T (b + r)``;
* iterates are kept on Martens' geometric grid ``i = ceil(5 * 1.3^j)`` (plus the last
  one) so the caller can backtrack over them;
* Martens' relative-progress stopping rule: stop at iteration ``i`` when ``i > k``,
  ``phi_i < 0`` and ``(phi_i - phi_{i-k}) / phi_i < k * eps`` with
  ``k = max(10, ceil(0.1 i))``, ``eps = 5e-4``; an iteration cap; optionally a
  relative-residual tolerance ``|r| <= rtol |b|``;
* negative-curvature detection: a direction with ``d^T A d <= 0`` is never taken;
  the solve stops there;
* flexible PCG (Notay 2000; Sainath et al. 2013) for preconditioners that change
  between iterations (L-BFGS fed from CG itself): ``beta`` in Polak-Ribiere form
  ``beta = z_{i+1}^T (r_{i+1} - r_i) / (r_i^T z_i)`` instead of the Fletcher-Reeves
  ``z_{i+1}^T r_{i+1} / (r_i^T z_i)``.  With a fixed symmetric preconditioner the
  two agree in exact arithmetic because ``z_{i+1}^T r_i = r_{i+1}^T M^{-1} r_i = 0``;
* segmented ("block") mode: with ``segments`` (one block id per element) the solve
  is ``B`` independent CG runs on the diagonal blocks of a block-diagonal ``A``,
  executed in lockstep with per-block scalars ``alpha``, ``beta``, ``phi`` and
  per-block stopping (block-diagonal Hessian-free, Zhang et al. 2017).
"""

from __future__ import annotations

import abc
import enum
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

logger = logging.getLogger(__name__)

Tensor = torch.Tensor


class LinearOperator(abc.ABC):
    """A linear map ``R^n -> R^n`` given by its action on flat vectors."""

    @property
    @abc.abstractmethod
    def numel(self) -> int:
        """``n``, the length of the vectors the operator acts on."""

    @abc.abstractmethod
    def matvec(self, v: Tensor) -> Tensor:
        """Return ``A v`` for ``v`` of shape ``(n,)``."""

    def matmat(self, v: Tensor) -> Tensor:
        """Return ``A V`` for ``V`` of shape ``(n, k)`` (column by column unless overridden)."""
        return torch.stack([self.matvec(v[:, j]) for j in range(v.shape[1])], dim=1)

    def to_dense(self, dtype: Optional[torch.dtype] = None, device: Optional[torch.device] = None) -> Tensor:
        """The explicit ``n x n`` matrix (small problems and tests only)."""
        eye = torch.eye(self.numel, dtype=dtype, device=device)
        return self.matmat(eye)

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v) if v.dim() == 1 else self.matmat(v)


class DenseOperator(LinearOperator):
    """An explicit matrix as a :class:`LinearOperator` (references, small problems)."""

    def __init__(self, matrix: Tensor) -> None:
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix

    @property
    def numel(self) -> int:
        return self.matrix.shape[0]

    def matvec(self, v: Tensor) -> Tensor:
        return self.matrix @ v

    def matmat(self, v: Tensor) -> Tensor:
        return self.matrix @ v


MatVec = Callable[[Tensor], Tensor]


def _as_matvec(op: LinearOperator | MatVec) -> MatVec:
    return op.matvec if isinstance(op, LinearOperator) or hasattr(op, "matvec") else op  # type: ignore[union-attr]


class StopReason(str, enum.Enum):
    """Why a CG run ended."""

    PROGRESS = "progress"  # Martens' relative-progress rule (every block)
    RESIDUAL = "residual"  # |r| <= rtol |b| (every block)
    MAX_ITERS = "max_iters"
    NEGATIVE_CURVATURE = "negative_curvature"  # d^T A d <= 0 met (in at least one block)
    MIXED = "mixed"  # segmented solve whose blocks stopped for different reasons


def martens_grid(max_iters: int, start: float = 5.0, ratio: float = 1.3) -> list[int]:
    """The iterations ``i = ceil(start * ratio^j)``, ``j = 0, 1, ...``, up to ``max_iters``.

    >>> martens_grid(30)
    [5, 7, 9, 11, 15, 19, 25]
    """
    grid: list[int] = []
    j = 0
    while True:
        i = math.ceil(start * ratio**j - 1e-9)
        if i > max_iters:
            return grid
        if not grid or i > grid[-1]:
            grid.append(i)
        j += 1


@dataclass
class CGIterate:
    """A kept CG iterate.

    Attributes:
        iteration: the CG iteration ``i`` that produced it (0 = the starting point).
        x: the iterate, shape ``(n,)``.
        phi: ``phi(x) = 0.5 x^T A x - b^T x`` (summed over blocks).
    """

    iteration: int
    x: Tensor
    phi: float


@dataclass
class CGResult:
    """What :func:`conjugate_gradient` returns.

    Attributes:
        x: the last iterate, shape ``(n,)``.
        iterates: the kept iterates (Martens' grid and the last one), oldest first.
        phis: ``phi`` after each iteration, ``phis[0]`` at the starting point.
        residual_norms: ``|r_i|`` after each iteration, ``[0]`` at the start.
        iterations: iterations performed (matrix-vector products, not counting the one
            for a non-zero starting point).
        stop_reason: why the run ended.
        block_iterations: per-block iteration at which each block stopped, shape ``(B,)``.
        block_reasons: per-block stop reasons.
    """

    x: Tensor
    iterates: list[CGIterate]
    phis: list[float]
    residual_norms: list[float]
    iterations: int
    stop_reason: StopReason
    block_iterations: list[int] = field(default_factory=list)
    block_reasons: list[StopReason] = field(default_factory=list)

    @property
    def negative_curvature(self) -> bool:
        return StopReason.NEGATIVE_CURVATURE in self.block_reasons


def conjugate_gradient(
    a: LinearOperator | MatVec,
    b: Tensor,
    x0: Optional[Tensor] = None,
    *,
    precond: Optional[LinearOperator | MatVec] = None,
    flexible: bool = False,
    max_iters: int = 250,
    rtol: float = 0.0,
    progress_tol: Optional[float] = 5e-4,
    progress_window: int = 10,
    progress_fraction: float = 0.1,
    grid: Optional[list[int]] = None,
    observe: Optional[Callable[[Tensor, Tensor], None]] = None,
    segments: Optional[Tensor] = None,
    num_segments: int = 1,
) -> CGResult:
    """(Flexible, preconditioned, optionally segmented) conjugate gradient for ``A x = b``.

    Args:
        a: the operator ``A`` (symmetric; positive definite on the Krylov space for a
            meaningful solution), ``matvec`` on shape ``(n,)``.
        b: right-hand side, shape ``(n,)``.
        x0: starting point (warm start), shape ``(n,)``; zeros if omitted.
        precond: ``z = M^{-1} r``; identity if omitted.  May change between calls
            (then use ``flexible=True``).
        flexible: Polak-Ribiere ``beta`` (flexible PCG) instead of Fletcher-Reeves.
        max_iters: iteration cap.
        rtol: stop a block when ``|r_b| <= rtol |b_b|`` (0 disables).
        progress_tol: ``eps`` of Martens' relative-progress rule (``None`` disables).
        progress_window: minimum ``k`` of the progress rule (Martens: 10).
        progress_fraction: ``k = max(progress_window, ceil(progress_fraction * i))``.
        grid: iterations whose iterates are kept (default :func:`martens_grid`); the
            last iterate is always kept, the starting point is not.
        observe: called as ``observe(s, A s)`` after each step with ``s = alpha d``
            (the L-BFGS preconditioner's pair source).
        segments: block id of each element, int64 shape ``(n,)`` in ``[0, B)``, for
            ``B = num_segments`` independent lockstep solves on a block-diagonal ``A``.
        num_segments: ``B``.

    Returns:
        A :class:`CGResult`.
    """
    if precond is not None and not flexible and not getattr(precond, "fixed", True):
        raise ValueError(
            "this preconditioner changes during the solve (it takes pairs from the running CG), so plain PCG "
            "loses its guarantees: use flexible=True (flexible PCG), or a preconditioner fixed during the solve"
        )
    matvec = _as_matvec(a)
    apply_m = _as_matvec(precond) if precond is not None else None
    nb = num_segments if segments is not None else 1
    if grid is None:
        grid = martens_grid(max_iters)
    grid_set = set(grid)

    # CG's scalars accumulate in float64 whatever the vectors' precision: a float32 dot of
    # 41M same-sign terms is off by ~1e-3 relative on CPU (phi and alpha with it); the
    # products stay in the vectors' dtype, the scalars are cast back when they scale one.
    def dots(u: Tensor, v: Tensor) -> Tensor:  # per-block inner products, float64 shape (B,)
        if segments is None:
            return (u * v).sum(dtype=torch.float64).reshape(1)
        return torch.zeros(nb, dtype=torch.float64, device=u.device).index_add_(0, segments, (u * v).double())

    def expand(c: Tensor) -> Tensor:  # per-block scalar -> per element, in the vectors' dtype
        return (c if segments is None else c[segments]).to(b.dtype)

    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None and bool(torch.any(x0 != 0)) else b.clone()
    z = apply_m(r) if apply_m is not None else r
    d = z.clone()
    rz = dots(r, z)
    bb = dots(b, b)

    phi_b = -0.5 * dots(x, b + r)
    rr_b = dots(r, r)
    host = torch.stack([phi_b, rr_b, bb]).tolist()
    phi_hist: list[list[float]] = [host[0]]  # per-block phi, per iteration
    rnorm0 = [math.sqrt(max(v, 0.0)) for v in host[1]]
    bnorm = [math.sqrt(max(v, 0.0)) for v in host[2]]
    phis = [sum(host[0])]
    residual_norms = [math.sqrt(sum(host[1]))]

    active = [True] * nb
    reasons: list[Optional[StopReason]] = [None] * nb
    stopped_at = [0] * nb
    for j in range(nb):
        if rnorm0[j] == 0.0 or (rtol > 0 and rnorm0[j] <= rtol * bnorm[j]):
            active[j], reasons[j] = False, StopReason.RESIDUAL

    iterates: list[CGIterate] = []
    i = 0
    while any(active) and i < max_iters:
        i += 1
        ad = matvec(d)
        dad = dots(d, ad)
        dad_host = dad.tolist()
        act = torch.tensor(active, device=b.device)
        for j in range(nb):
            if active[j] and not dad_host[j] > 0.0:  # also catches NaN
                active[j], reasons[j], stopped_at[j] = False, StopReason.NEGATIVE_CURVATURE, i - 1
                act[j] = False
        if not any(active):
            i -= 1  # no step taken in this iteration
            break
        alpha = torch.where(act, rz / torch.where(act, dad, torch.ones_like(dad)), torch.zeros_like(dad))
        alpha_e = expand(alpha)
        s = alpha_e * d
        a_s = alpha_e * ad
        x = x + s
        r_new = r - a_s
        if observe is not None:
            observe(s, a_s)

        phi_b = -0.5 * dots(x, b + r_new)
        rr_b = dots(r_new, r_new)
        host = torch.stack([phi_b, rr_b]).tolist()
        phi_hist.append(host[0])
        phis.append(sum(host[0]))
        residual_norms.append(math.sqrt(max(sum(host[1]), 0.0)))
        if i in grid_set:
            iterates.append(CGIterate(i, x.clone(), phis[-1]))

        for j in range(nb):
            if not active[j]:
                continue
            if rtol > 0 and math.sqrt(max(host[1][j], 0.0)) <= rtol * bnorm[j]:
                active[j], reasons[j], stopped_at[j] = False, StopReason.RESIDUAL, i
                continue
            if progress_tol is not None:
                k = max(progress_window, math.ceil(progress_fraction * i))
                phi_i = phi_hist[i][j]
                if i > k and phi_i < 0 and (phi_i - phi_hist[i - k][j]) / phi_i < k * progress_tol:
                    active[j], reasons[j], stopped_at[j] = False, StopReason.PROGRESS, i
        if not any(active):
            r = r_new
            break

        z_new = apply_m(r_new) if apply_m is not None else r_new
        act = torch.tensor(active, device=b.device)
        num = dots(z_new, r_new - r) if flexible else dots(z_new, r_new)
        safe_rz = torch.where(act & (rz != 0), rz, torch.ones_like(rz))
        beta = torch.where(act, num / safe_rz, torch.zeros_like(num))
        rz = dots(r_new, z_new)
        d = z_new + expand(beta) * d
        r = r_new

    for j in range(nb):
        if reasons[j] is None:
            reasons[j], stopped_at[j] = StopReason.MAX_ITERS, i
    if not iterates or iterates[-1].iteration != i:
        iterates.append(CGIterate(i, x.clone(), phis[i]))
    block_reasons = [rsn for rsn in reasons if rsn is not None]
    if StopReason.NEGATIVE_CURVATURE in block_reasons:
        reason = StopReason.NEGATIVE_CURVATURE
    elif len(set(block_reasons)) == 1:
        reason = block_reasons[0]
    else:
        reason = StopReason.MIXED
    logger.debug("CG: %d iterations, stop=%s, phi=%.6g", i, reason.value, phis[i])
    return CGResult(
        x=x,
        iterates=iterates,
        phis=phis,
        residual_norms=residual_norms,
        iterations=i,
        stop_reason=reason,
        block_iterations=stopped_at,
        block_reasons=block_reasons,
    )
