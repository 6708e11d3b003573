"""Preconditioners for CG: operators ``z = M^{-1} r`` with hooks for the solve.

* :class:`IdentityPreconditioner`: ``z = r``.
* :class:`DiagonalPreconditioner`: Martens (2010): ``M = diag(F + (l2 + lambda))^alpha``
  with ``F = (1/N) sum_n (grad l_n)^2`` the empirical-Fisher diagonal and
  ``alpha = 0.75``.
* :class:`LBFGSPreconditioner`: Sainath et al. (2013): ``M^{-1}`` is the L-BFGS
  inverse-curvature approximation (two-loop recursion, never a matrix) built from
  pairs ``(s, y) = (alpha_i d_i, alpha_i A d_i)`` that CG produces.  By default pairs
  of earlier HF iterations' CG runs (the first 10 of each run, 40 kept) precondition
  the next solve, held fixed during it (Morales & Nocedal 2000), with ``y`` shifted by
  the damping change.
  Pairs from the running solve alone give back plain CG in exact arithmetic: that
  variant (``source=in_solve``) is kept only as an explicit option.
* :class:`~asr_hf.optim.kfac_precond.KFACPreconditioner`: the damped Kronecker-factored
  GGN of the curvature sample (Martens & Grosse 2015), rebuilt every HF iteration.

The solver calls ``matvec`` and ``observe(s, A s)``; the optimizer calls
``begin_solve(damping)`` before and ``end_solve()`` after each CG run.
"""

from __future__ import annotations

import enum
from typing import Any, Optional

import torch

from asr_hf.optim.lbfgs import LBFGSMemory
from asr_hf.optim.solvers import LinearOperator

Tensor = torch.Tensor


class PreconditionerKind(str, enum.Enum):
    NONE = "none"
    DIAGONAL = "diagonal"
    LBFGS = "lbfgs"
    KFAC = "kfac"  # asr_hf.optim.kfac_precond: Kronecker factors of the curvature sample


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


class LBFGSPairSource(str, enum.Enum):
    """Where the L-BFGS preconditioner's curvature pairs come from.

    * ``PREVIOUS``: pairs from the previous HF iteration's CG run, held fixed during the
      next solve (Morales & Nocedal 2000, automatic preconditioning by limited-memory
      quasi-Newton updating).  The preconditioner is a fixed SPD operator during each
      solve, so PCG keeps its guarantees; the pairs come for free from CG.
    * ``IN_SOLVE``: pairs pushed as the running CG produces them.  The preconditioner
      changes inside the solve (flexible PCG is required), and in exact arithmetic it
      only re-conjugates the residual against directions CG already has: the iterates
      equal plain CG's (checked in float64 by the tests).  Kept for study only.
    * ``BOTH``: the previous solve's pairs, then the running solve's pushed on top
      (flexible PCG required).
    """

    PREVIOUS = "previous"
    IN_SOLVE = "in_solve"
    BOTH = "both"


class LBFGSPairSelection(str, enum.Enum):
    """Which ``k`` of a CG run's pairs are added to the memory for the next solves.

    * ``FIRST``: the first ``k`` (default).  The first (P)CG steps are Lanczos steps:
      they find the largest eigen-directions of the (preconditioned) system first, the
      ones that dominate its conditioning and move least between HF iterations;
    * ``EVEN``: ``k`` evenly spaced over the whole run (Morales & Nocedal 2000's
      "uniform" choice for a single previous system);
    * ``LAST``: the last ``k``.
    """

    FIRST = "first"
    EVEN = "even"
    LAST = "last"


class LBFGSPreconditioner(Preconditioner):
    """L-BFGS ``M^{-1} ~ A^{-1}`` from CG's own ``(s, A s)`` pairs (Sainath et al. 2013).

    With ``source=PREVIOUS`` (the default) the solve of HF iteration ``k`` is
    preconditioned by the L-BFGS matrix of the pairs ``(s_i, y_i) = (alpha_i d_i,
    alpha_i A_j d_i)`` kept from earlier iterations' CG runs ``j < k``, held fixed during
    the solve (Morales & Nocedal 2000).  Each solve adds ``k = pairs_per_solve`` of its
    pairs (``selection``) to a memory of ``m = history`` pairs, oldest dropped first.
    Accumulating over several solves matters: once the preconditioner has removed the
    dominant eigen-directions, the next PCG run's pairs describe the *remaining*
    spectrum, so a memory holding only the last run's pairs forgets what the one before
    captured and the iteration counts alternate (measured in ``tests/optim/test_precond.py``
    on dense float64 sequences: 1.3x with only the last run's 20 pairs, 2x with 40 pairs
    accumulated 10 per run).

    The systems differ from solve to solve in the damping, the curvature sample and the
    parameters.  The damping change is exact: a pair of ``A_j = C_j + lambda_j I``
    becomes one of ``C_j + lambda_k I`` with ``y += (lambda_k - lambda_j) s``, so
    ``begin_solve`` shifts every ``y``.  The curvature-sample and parameter changes are not
    corrected (the GGN's dominant eigen-directions, which the pairs capture, move slowly);
    with ``refresh=True`` every kept ``s`` gets a fresh ``y = A_k s`` at the start of each
    solve, at ``m`` extra products.

    Args:
        numel: ``n``.
        history: memory size ``m`` (pairs kept over solves).
        source: :class:`LBFGSPairSource`.
        selection: :class:`LBFGSPairSelection` (which pairs of a run are kept).
        pairs_per_solve: ``k``, pairs a run adds (at most ``m``; ``k = m`` keeps only the
            last run's pairs).
        refresh: recompute ``y = A s`` for the kept pairs at each solve (needs
            :meth:`begin_solve`'s ``operator``).
        min_curvature: pairs with ``s.y <= min_curvature |s||y|`` are rejected.

    Attributes:
        fixed: whether ``M`` stays constant during a solve (plain PCG is then valid).
        refresh_products: operator products spent on ``refresh`` so far.
    """

    def __init__(
        self,
        numel: int,
        history: int = 40,
        source: LBFGSPairSource | str = LBFGSPairSource.PREVIOUS,
        selection: LBFGSPairSelection | str = LBFGSPairSelection.FIRST,
        pairs_per_solve: int = 10,
        refresh: bool = False,
        min_curvature: float = 1e-10,
    ) -> None:
        super().__init__(numel)
        if history < 1:
            raise ValueError(f"lbfgs history must be >= 1, got {history}")
        k = min(int(pairs_per_solve), history)
        if k < 1:
            raise ValueError(f"lbfgs pairs_per_solve must be >= 1, got {pairs_per_solve}")
        self.source = LBFGSPairSource(source)
        self.selection = LBFGSPairSelection(selection)
        self.pairs_per_solve = k
        self.refresh = refresh
        self.memory = LBFGSMemory(history=history, min_curvature=min_curvature)
        self.fixed = self.source == LBFGSPairSource.PREVIOUS
        self.damping = 0.0  # damping the stored pairs correspond to
        self._collect = self.source != LBFGSPairSource.IN_SOLVE
        self._kept: list[Tensor] = []  # BOTH: the memory's pairs at the start of the solve
        self._kept_y: list[Tensor] = []
        self._buffer: list[tuple[Tensor, Tensor]] = []
        self._stride = 1  # EVEN: the buffer holds every stride-th pair of the run
        self._seen = 0  # pairs the running solve produced
        self.accepted = 0
        self.rejected = 0
        self.refresh_products = 0

    @property
    def history(self) -> int:
        return self.memory.history

    def begin_solve(self, damping: float, operator: Optional[LinearOperator] = None) -> None:
        """Prepare for a solve with ``A = C + damping I``: shift (or refresh) the kept
        pairs, and start collecting this solve's pairs."""
        if self.source == LBFGSPairSource.IN_SOLVE:
            self.memory.clear()
        elif self.refresh and len(self.memory):
            if operator is None:
                raise ValueError("lbfgs refresh needs the solve's operator in begin_solve")
            kept = list(self.memory._s)
            self.memory.clear()
            for s in kept:
                self._push(s, operator.matvec(s))
            self.refresh_products += len(kept)
        elif damping != self.damping:
            self.memory.shift_curvature(damping - self.damping)
        self.damping = damping
        if self.source == LBFGSPairSource.BOTH:  # the running pairs go on top, temporarily
            self._kept, self._kept_y = list(self.memory._s), list(self.memory._y)
        self._buffer, self._stride, self._seen = [], 1, 0

    def _push(self, s: Tensor, y: Tensor) -> bool:
        ok = self.memory.push(s, y)
        self.accepted += ok
        self.rejected += not ok
        return ok

    def observe(self, s: Tensor, a_s: Tensor) -> None:
        if self.source != LBFGSPairSource.PREVIOUS:
            self._push(s, a_s)
        if not self._collect:
            return
        k, i = self.pairs_per_solve, self._seen
        self._seen += 1
        if self.selection == LBFGSPairSelection.FIRST:
            if i < k:
                self._buffer.append((s.detach().clone(), a_s.detach().clone()))
        elif self.selection == LBFGSPairSelection.LAST:
            self._buffer.append((s.detach().clone(), a_s.detach().clone()))
            if len(self._buffer) > k:
                self._buffer.pop(0)
        elif i % self._stride == 0:  # EVEN: O(k) memory, thinned to every second pair when full
            self._buffer.append((s.detach().clone(), a_s.detach().clone()))
            if len(self._buffer) >= 2 * k:
                self._buffer = self._buffer[::2]
                self._stride *= 2

    def _selected(self) -> list[tuple[Tensor, Tensor]]:
        k, buf = self.pairs_per_solve, self._buffer
        if self.selection == LBFGSPairSelection.EVEN and len(buf) > k:
            step = len(buf) / k  # k evenly spaced of the buffer, the last one included
            return [buf[min(len(buf) - 1, int(round((j + 1) * step)) - 1)] for j in range(k)]
        return list(buf)

    def end_solve(self) -> None:
        """Add the selected pairs of the solve that just ended to the memory (oldest
        first, so the newest pair sets the initial scaling; the oldest are dropped)."""
        if self.source == LBFGSPairSource.BOTH:  # drop the running pairs, restore the kept ones
            self.memory.clear()
            for s, y in zip(self._kept, self._kept_y):
                self.memory.push(s, y)
            self._kept, self._kept_y = [], []
        for s, y in self._selected() if self._collect else []:
            self._push(s, y)
        self._buffer = []

    def matvec(self, v: Tensor) -> Tensor:
        return self.memory.apply(v) if len(self.memory) else v

    def state_dict(self) -> dict[str, Any]:
        return {
            "memory": self.memory.state_dict(),
            "damping": self.damping,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "refresh_products": self.refresh_products,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.damping = float(state["damping"])
        self.accepted = int(state["accepted"])
        self.rejected = int(state["rejected"])
        self.refresh_products = int(state.get("refresh_products", 0))
        self._buffer, self._stride, self._seen = [], 1, 0
