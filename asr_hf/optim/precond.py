"""Preconditioners for CG: operators ``z = M^{-1} r`` with hooks for the solve.

* :class:`IdentityPreconditioner`: ``z = r``.
* :class:`DiagonalPreconditioner`: Martens (2010): ``M = diag(F + (l2 + lambda))^alpha``
  with ``F = (1/N) sum_n (grad l_n)^2`` the empirical-Fisher diagonal and
  ``alpha = 0.75``.
* :class:`LBFGSPreconditioner`: Sainath et al. (2013): ``M^{-1}`` is the L-BFGS
  inverse-curvature approximation (two-loop recursion, never a matrix) built from
  pairs ``(s, y) = (alpha_i d_i, alpha_i A d_i)`` that CG produces as it runs.  Pairs
  may be pushed as they arrive (the preconditioner then changes inside the solve, so
  use flexible PCG) or only after the solve, and may be kept across HF iterations;
  when they are kept and the damping changed from ``lambda_old`` to ``lambda``, every
  ``y`` is shifted by ``(lambda - lambda_old) s`` so the pairs describe the new
  damped matrix exactly in its damping part.

The solver calls ``matvec`` and ``observe(s, A s)``; the optimizer calls
``begin_solve(damping)`` before and ``end_solve()`` after each CG run.
"""

from __future__ import annotations

import enum
from typing import Any

import torch

from asr_hf.optim.lbfgs import LBFGSMemory
from asr_hf.optim.solvers import LinearOperator

Tensor = torch.Tensor


class PreconditionerKind(str, enum.Enum):
    NONE = "none"
    DIAGONAL = "diagonal"
    LBFGS = "lbfgs"


class Preconditioner(LinearOperator):
    """Base: ``matvec(r) = M^{-1} r`` plus solve hooks (no-ops by default).

    Args:
        numel: ``n``, the length of the vectors.
    """

    #: True when ``M`` does not change during a solve (plain PCG is then valid).
    fixed: bool = True

    def __init__(self, numel: int) -> None:
        self._numel = numel

    @property
    def numel(self) -> int:
        return self._numel

    def begin_solve(self, damping: float) -> None:
        """Called before a CG run on ``A = C + damping I``."""

    def observe(self, s: Tensor, a_s: Tensor) -> None:
        """A CG step ``s = alpha d`` with ``A s``."""

    def end_solve(self) -> None:
        """Called after a CG run."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class IdentityPreconditioner(Preconditioner):
    def matvec(self, v: Tensor) -> Tensor:
        return v


class DiagonalPreconditioner(Preconditioner):
    """``M^{-1} r = r / m`` for a positive diagonal ``m`` of shape ``(n,)``."""

    def __init__(self, diag: Tensor) -> None:
        super().__init__(diag.numel())
        if not bool(torch.all(diag > 0)):
            raise ValueError("diagonal preconditioner needs a positive diagonal")
        self.diag = diag

    @classmethod
    def empirical_fisher(
        cls, sq_grad: Tensor, damping: float, exponent: float = 0.75, l2: float = 0.0
    ) -> "DiagonalPreconditioner":
        """Martens' ``m = (F + l2 + lambda)^exponent`` from ``F = mean_n (grad l_n)^2``.

        A zero total shift falls back to ``1e-12`` so ``m`` stays positive."""
        shift = l2 + damping
        return cls((sq_grad + (shift if shift > 0 else 1e-12)).pow(exponent))

    def matvec(self, v: Tensor) -> Tensor:
        return v / self.diag

    def to_dense(self, dtype: torch.dtype | None = None, device: torch.device | None = None) -> Tensor:
        return torch.diag(1.0 / self.diag).to(dtype=dtype or self.diag.dtype)


class LBFGSPreconditioner(Preconditioner):
    """L-BFGS ``M^{-1} ~ A^{-1}`` from CG's own ``(s, A s)`` pairs.

    Args:
        numel: ``n``.
        history: memory size ``m`` (pairs kept, newest first dropped last).
        keep_pairs: keep pairs across solves (HF iterations) instead of starting each
            solve from ``M = I``.
        update_in_cg: push pairs as CG produces them (the preconditioner changes
            inside the solve: use flexible PCG); otherwise pairs become active at the
            next solve.
        min_curvature: pairs with ``s.y <= min_curvature |s||y|`` are rejected.
    """

    def __init__(
        self,
        numel: int,
        history: int = 20,
        keep_pairs: bool = False,
        update_in_cg: bool = True,
        min_curvature: float = 1e-10,
    ) -> None:
        super().__init__(numel)
        self.memory = LBFGSMemory(history=history, min_curvature=min_curvature)
        self.keep_pairs = keep_pairs
        self.update_in_cg = update_in_cg
        self.fixed = not update_in_cg
        self.damping = 0.0  # damping the stored pairs correspond to
        self.pending: list[tuple[Tensor, Tensor]] = []
        self.accepted = 0
        self.rejected = 0

    def begin_solve(self, damping: float) -> None:
        if not self.keep_pairs:
            self.memory.clear()
        elif damping != self.damping:
            self.memory.shift_curvature(damping - self.damping)
        self.damping = damping
        self.pending = []

    def observe(self, s: Tensor, a_s: Tensor) -> None:
        if self.update_in_cg:
            ok = self.memory.push(s, a_s)
            self.accepted += ok
            self.rejected += not ok
        else:
            self.pending.append((s.detach().clone(), a_s.detach().clone()))

    def end_solve(self) -> None:
        for s, y in self.pending[-self.memory.history :]:
            ok = self.memory.push(s, y)
            self.accepted += ok
            self.rejected += not ok
        self.pending = []

    def matvec(self, v: Tensor) -> Tensor:
        return self.memory.apply(v) if len(self.memory) else v

    def state_dict(self) -> dict[str, Any]:
        return {
            "memory": self.memory.state_dict(),
            "damping": self.damping,
            "accepted": self.accepted,
            "rejected": self.rejected,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.damping = float(state["damping"])
        self.accepted = int(state["accepted"])
        self.rejected = int(state["rejected"])
        self.pending = []
