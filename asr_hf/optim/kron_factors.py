"""Kronecker-factor helpers of KFAC and K-BFGS: the factor averaging schedule, damped
inverses, the damping split between factors and the damping / acceptance of BFGS pairs.

Notation as in :mod:`asr_hf.optim.kron`: per layer, ``A`` (``d_a x d_a``) and ``G``
(``d_out x d_out``) approximate the curvature block by ``A (x) G``; ``H_A ~ A^{-1}`` and
``H_G ~ G^{-1}``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Callable

import torch


def warmup_decay(step: int, decay: float) -> float:
    """``min(1 - 1/(k+1), decay)`` for step ``k = 0, 1, ...``: the first factor estimate is the
    first batch's, then a running mean, until the exponential ``decay`` takes over."""
    return min(1.0 - 1.0 / (step + 1), decay)


def damped_inverse(mat: torch.Tensor, damping: float | torch.Tensor) -> torch.Tensor:
    """``(M + damping I)^{-1}`` for a symmetric PSD ``M`` of shape ``(n, n)``.

    Cholesky first; if that fails (round-off making ``M + damping I`` numerically
    indefinite), an eigendecomposition with eigenvalues clamped at ``damping``.
    """
    n = mat.shape[0]
    sym = 0.5 * (mat + mat.T)
    damped = sym + damping * torch.eye(n, dtype=mat.dtype, device=mat.device)
    chol, info = torch.linalg.cholesky_ex(damped)
    if int(info) == 0:
        return torch.cholesky_inverse(chol)
    evals, evecs = torch.linalg.eigh(sym)
    evals = evals.clamp_min(0) + damping
    return (evecs / evals) @ evecs.T


def pi_split(a: torch.Tensor, g: torch.Tensor, damping: float) -> tuple[float, float]:
    """Tikhonov damping ``lambda`` split between the factors (Martens & Grosse 2015, 6.3).

    ``pi = sqrt((tr(A)/d_A) / (tr(G)/d_G))``; returns ``(pi sqrt(lambda), sqrt(lambda)/pi)``
    for ``A`` and ``G``.  Falls back to ``pi = 1`` when a trace is not positive.
    """
    ta = float(torch.trace(a)) / a.shape[0]
    tg = float(torch.trace(g)) / g.shape[0]
    root = math.sqrt(damping)
    if not (ta > 0 and tg > 0 and math.isfinite(ta) and math.isfinite(tg)):
        return root, root
    pi = math.sqrt(ta / tg)
    return pi * root, root / pi


class LMDamping(str, enum.Enum):
    """The second (Levenberg-Marquardt) step of K-BFGS double damping."""

    #: The authors' rule (the default): Powell damping with ``B = I``; if
    #: ``s~.y / s~.s~ < mu2``: ``y~ = t y + (1-t) s~`` so that ``s~.y~ = mu2 s~.s~``.
    POWELL = "powell"
    #: ``y~ = y + mu2 s~`` on every pair (the pair of ``B + mu2 I``; not the authors' code).
    ADDITIVE = "additive"


class PairTest(str, enum.Enum):
    """Which (damped) curvature pairs a BFGS factor accepts; see :func:`pair_accepted`."""

    #: The authors' test (the default): ``s.y > 1e-4 (s.s) |g|``.
    AUTHORS = "authors"
    #: The scale-free ``s.y > 1e-12 |s| |y|`` used here before.
    RELATIVE = "relative"


#: The constant of the authors' pair test ``s.y > 1e-4 (s.s) |g|``.
AUTHORS_PAIR_EPS = 1e-4
#: The constant of the relative pair test ``s.y > 1e-12 |s| |y|``.
RELATIVE_PAIR_EPS = 1e-12


def pair_accepted(s: torch.Tensor, y: torch.Tensor, g: torch.Tensor, test: PairTest | str) -> torch.Tensor:
    """Whether a BFGS factor should take the pair ``(s, y)``; a 0-d bool tensor (no sync).

    * ``AUTHORS`` (Goldfarb, Ren & Bahamou's code): ``s.y > 1e-4 (s.s) |g|`` with ``g`` the
      factor's gradient-like vector of this step: the mean pre-activation gradient ``gbar``
      (at the parameters before the update, not smoothed) for ``H_G``, the mean homogeneous
      layer input ``abar`` for the Hessian-action pair of ``H_A``.  With ``g = 0`` it is
      ``s.y > 0``.  After LM damping ``s.y >= mu2 s.s``, so it rejects a pair only when
      ``|g| >= mu2 / 1e-4``, i.e. it stops updating a factor on a very large gradient.
    * ``RELATIVE``: ``s.y > 1e-12 |s| |y|`` (``g`` unused).

    Both are invariant to a common scale of ``s`` and ``y``.  Non-finite pairs are rejected.

    Args:
        s, y: the pair, shape ``(n,)``.
        g: shape ``(m,)`` (any length; only its norm is used).
        test: which test.
    """
    test = PairTest(test)
    sy = torch.dot(s, y)
    if test is PairTest.AUTHORS:
        ss = torch.dot(s, s)
        ok = sy > AUTHORS_PAIR_EPS * ss * torch.linalg.vector_norm(g).to(ss)
        ok = ok & torch.isfinite(ss)
    else:
        ok = sy > RELATIVE_PAIR_EPS * s.norm() * y.norm()
    return ok & torch.isfinite(sy)


@dataclass
class DampedPair:
    """Output of :func:`double_damping`.  ``powell`` / ``lm`` are 0-d bool tensors telling
    whether each step changed the pair; ``theta`` is Powell's ``theta`` (1 when inactive)."""

    s: torch.Tensor
    y: torch.Tensor
    theta: torch.Tensor
    powell: torch.Tensor
    lm: torch.Tensor


def double_damping(
    s: torch.Tensor,
    y: torch.Tensor,
    h_apply: Callable[[torch.Tensor], torch.Tensor],
    mu1: float = 0.2,
    mu2: float = 0.0,
    lm: LMDamping | str = LMDamping.POWELL,
) -> DampedPair:
    """Double damping of a BFGS pair (Goldfarb, Ren & Bahamou 2020, Alg. 3).

    Let ``H ~ B^{-1}`` be the current inverse approximation (SPD, applied by ``h_apply``).

    1. Powell damping *on H* (the inverse form of Powell's damped BFGS: ``s`` and ``y`` swap
       roles and ``B`` becomes ``H``): if ``s.y < mu1 y.H.y``,
       ``theta = (1 - mu1) yHy / (yHy - s.y)`` and ``s~ = theta s + (1 - theta) H y``, which
       gives ``s~.y = mu1 yHy`` exactly; otherwise ``s~ = s``.  Either way
       ``s~.y >= mu1 y.H.y`` (bounds ``|y|^2 / s~.y <= 1 / (mu1 lambda_min(H))``).
    2. Levenberg-Marquardt damping with ``mu2`` (``sqrt(lambda)`` in K-BFGS):

       * ``POWELL`` (the authors' code, ``get_BFGS_ModifiedDamping``): Powell damping with
         ``B = I``: if ``s~.y < mu2 s~.s~``, ``t = (1 - mu2) s~.s~ / (s~.s~ - s~.y)`` and
         ``y~ = t y + (1 - t) s~`` (``s~.y~ = mu2 s~.s~`` exactly); otherwise ``y~ = y``,
         so a well-conditioned pair passes unchanged.  For ``mu2 <= 1``, ``t`` lies in
         ``[0, 1)``.  The formula holds for any ``mu2``; only ``s~.y = s~.s~`` with
         ``mu2 > 1`` makes its denominator vanish, and that case takes the limit
         ``y~ = y + (mu2 - 1) s~``.
       * ``ADDITIVE``: ``y~ = y + mu2 s~`` on every pair (the pair of ``B + mu2 I``).

       Either way ``s~.y~ >= mu2 |s~|^2`` (curvature condition, and
       ``|s~|^2 / s~.y~ <= 1/mu2`` bounds the growth of ``H``).

    The ratio ``|y~|^2 / s~.y~`` is at most ``2/(mu1 lambda_min(H)) + 2/mu2`` for ``POWELL``
    with ``mu2 <= 1`` and ``2/(mu1 lambda_min(H)) + 2 mu2`` for ``ADDITIVE``; then for the
    BFGS update ``lambda_max(B+) <= lambda_max(B) + |y~|^2 / s~.y~`` (``B`` bounded above)
    and ``lambda_max(H+) <= lambda_max(H) (1 + sqrt(|y~|^2/(mu2 s~.y~)))^2 + 1/mu2`` (``H``
    bounded above, i.e. ``B`` bounded below).

    All branches use ``torch.where`` (no host synchronisation).

    Args:
        s, y: the pair, shape ``(n,)``.
        h_apply: ``v -> H v`` for ``v`` of shape ``(n,)``.
        mu1: Powell threshold in ``(0, 1)``.
        mu2: LM damping ``>= 0``.
        lm: which LM form.
    """
    if not 0.0 < mu1 < 1.0:
        raise ValueError(f"mu1 must be in (0, 1), got {mu1}")
    if mu2 < 0:
        raise ValueError(f"mu2 must be >= 0, got {mu2}")
    lm = LMDamping(lm)
    hy = h_apply(y)
    yhy = torch.dot(y, hy)
    sy = torch.dot(s, y)
    powell = sy < mu1 * yhy
    denom = torch.where(powell, yhy - sy, torch.ones_like(yhy))
    theta = torch.where(powell, (1.0 - mu1) * yhy / denom, torch.ones_like(yhy))
    s_t = theta * s + (1.0 - theta) * hy
    if lm is LMDamping.ADDITIVE:
        y_t = y + mu2 * s_t
        lm_active = torch.as_tensor(mu2 > 0, device=s.device)
    else:
        ss = torch.dot(s_t, s_t)
        sy_t = torch.dot(s_t, y)
        lm_active = sy_t < mu2 * ss
        den = ss - sy_t
        mix = lm_active & (den != 0)
        t = torch.where(mix, (1.0 - mu2) * ss / torch.where(mix, den, torch.ones_like(den)), torch.ones_like(ss))
        limit = lm_active & ~mix  # s~.y = s~.s~ < mu2 s~.s~ (mu2 > 1 only)
        shift = torch.where(limit, torch.full_like(ss, mu2 - 1.0), torch.zeros_like(ss))
        y_t = t * y + (1.0 - t) * s_t + shift * s_t
    return DampedPair(s_t, y_t, theta, powell, lm_active)


__all__ = [
    "AUTHORS_PAIR_EPS",
    "RELATIVE_PAIR_EPS",
    "DampedPair",
    "LMDamping",
    "PairTest",
    "damped_inverse",
    "double_damping",
    "pair_accepted",
    "pi_split",
    "warmup_decay",
]
