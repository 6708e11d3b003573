"""Limited-memory BFGS inverse-curvature operator (the two-loop recursion).

Shared by the L-BFGS preconditioner of Hessian-free CG (Sainath et al. 2013)
and the pre-activation factor of K-BFGS(L) (Goldfarb et al. 2020).

Given pairs ``(s_i, y_i)`` with ``s_i . y_i > 0`` (oldest first) and an initial
scaling ``H0 = gamma * I`` (by default ``gamma = s_k.y_k / y_k.y_k`` of the
newest pair), the operator applies the BFGS inverse-Hessian approximation

    H_{i+1} = (I - rho_i s_i y_i^T) H_i (I - rho_i y_i s_i^T) + rho_i s_i s_i^T,
    rho_i = 1 / (y_i . s_i),

to a vector without forming a matrix, in O(m n) work.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

import torch


class LBFGSMemory:
    """A bounded store of curvature pairs that applies ``H ~ B^{-1}`` to vectors.

    Args:
        history: maximum number of pairs kept (oldest dropped first).
        min_curvature: a pair with ``s.y <= min_curvature * |s| |y|`` is rejected
            (it would make ``H`` indefinite).
        initial_scale: fixed ``gamma`` for ``H0 = gamma I``; ``None`` uses the
            newest pair's ``s.y / y.y`` (the standard choice).
    """

    def __init__(
        self, history: int = 20, min_curvature: float = 1e-10, initial_scale: Optional[float] = None
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.history = history
        self.min_curvature = min_curvature
        self.initial_scale = initial_scale
        self._s: deque[torch.Tensor] = deque(maxlen=history)
        self._y: deque[torch.Tensor] = deque(maxlen=history)
        self._rho: deque[float] = deque(maxlen=history)

    def __len__(self) -> int:
        return len(self._s)

    def clear(self) -> None:
        self._s.clear()
        self._y.clear()
        self._rho.clear()

    def push(self, s: torch.Tensor, y: torch.Tensor) -> bool:
        """Add the pair ``(s, y)`` (1-D, same shape); return False if it was rejected."""
        s = s.detach().reshape(-1)
        y = y.detach().reshape(-1)
        sy = float(torch.dot(s, y))
        if not (sy > self.min_curvature * float(s.norm()) * float(y.norm())) or not torch.isfinite(
            torch.tensor(sy)
        ):
            return False
        self._s.append(s.clone())
        self._y.append(y.clone())
        self._rho.append(1.0 / sy)
        return True

    def shift_curvature(self, delta: float) -> int:
        """Replace every pair ``(s, y)`` by ``(s, y + delta s)``.

        For pairs with ``y = A s`` this turns them into pairs of ``A + delta I``: the
        exact update when only a Levenberg-Marquardt damping term changed.  Pairs that
        lose positive curvature are dropped; returns how many were dropped.
        """
        if delta == 0.0 or not self._s:
            return 0
        pairs = [(s, y + delta * s) for s, y in zip(self._s, self._y)]
        self.clear()
        kept = sum(self.push(s, y) for s, y in pairs)
        return len(pairs) - kept

    def gamma(self) -> float:
        """The scale of ``H0 = gamma I``."""
        if self.initial_scale is not None:
            return self.initial_scale
        if not self._s:
            return 1.0
        s, y = self._s[-1], self._y[-1]
        return float(torch.dot(s, y) / torch.dot(y, y))

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """Return ``H v``.

        Args:
            v: shape ``(n,)`` or ``(n, k)``; with ``k`` columns each column is
                multiplied (the K-BFGS(L) use, where ``v`` is a gradient matrix).
        """
        q = v.clone()
        mat = q.dim() == 2
        alphas = []
        for s, y, rho in zip(reversed(self._s), reversed(self._y), reversed(self._rho)):
            a = rho * (s @ q)  # () or (k,)
            q -= torch.outer(y, a) if mat else a * y
            alphas.append(a)
        r = q * self.gamma()
        for (s, y, rho), a in zip(zip(self._s, self._y, self._rho), reversed(alphas)):
            b = rho * (y @ r)
            r += torch.outer(s, a - b) if mat else (a - b) * s
        return r

    def dense(self, n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The explicit ``n x n`` matrix ``H`` by the recursive BFGS formula (tests only)."""
        h = torch.eye(n, dtype=dtype) * self.gamma()
        eye = torch.eye(n, dtype=dtype)
        for s, y, rho in zip(self._s, self._y, self._rho):
            s, y = s.to(dtype), y.to(dtype)
            left = eye - rho * torch.outer(s, y)
            h = left @ h @ left.T + rho * torch.outer(s, s)
        return h

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "s": [t.clone() for t in self._s],
            "y": [t.clone() for t in self._y],
            "rho": list(self._rho),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = int(state["history"])
        self._s = deque((t.clone() for t in state["s"]), maxlen=self.history)
        self._y = deque((t.clone() for t in state["y"]), maxlen=self.history)
        self._rho = deque(state["rho"], maxlen=self.history)
