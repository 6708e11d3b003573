"""Gradient / curvature sample-size schedules and the sampler that draws the samples.

Two schedules, each used separately for the gradient sample and for the curvature
(CG) sample, so the baseline and the accelerated method run through the same code:

* :class:`FixedFractionSchedule` (Kingsbury et al. 2012): ``n_k = f N`` every HF iteration;
* :class:`GeometricSchedule` (Sainath et al. 2013, reconstructed):
  ``n_k = min(N, n_0 gamma^k)`` with ``n_0 = f_0 N``, capped by ``max_fraction N``
  and ``max_size``.

:class:`DataSampler` draws, at HF iteration ``k``, one random permutation of the
training set from its own ``torch.Generator``; the gradient sample is its first
``n_grad`` indices and the curvature sample its first ``n_curv`` (so with
``n_curv <= n_grad`` the curvature sample is a subset of the gradient sample, as in
Martens 2010), or an independent draw with ``nested=False``.  Its state (iteration
index and generator state) makes the sample sequence resumable exactly.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import torch

Tensor = torch.Tensor


class SamplingKind(str, enum.Enum):
    FIXED = "fixed"
    GEOMETRIC = "geometric"


class SampleSchedule(Protocol):
    def size(self, iteration: int, total: int) -> int:
        """Sample size at HF iteration ``iteration`` (0-based) out of ``total`` examples."""
        ...


def _clamp(n: float, total: int, min_size: int, max_fraction: float, max_size: Optional[int]) -> int:
    cap = min(total, math.floor(max_fraction * total + 1e-9))
    if max_size is not None:
        cap = min(cap, max_size)
    return int(max(min(min_size, total), min(math.ceil(n - 1e-9), cap)))


@dataclass
class FixedFractionSchedule:
    """``n_k = ceil(fraction N)`` for every ``k``, at least ``min_size``, at most ``max_size``.

    Args:
        fraction: in ``(0, 1]``.
        min_size: floor on the size (and on ``N``).
        max_size: absolute cap, or ``None``.
    """

    fraction: float
    min_size: int = 1
    max_size: Optional[int] = None

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")

    def size(self, iteration: int, total: int) -> int:
        return _clamp(self.fraction * total, total, self.min_size, 1.0, self.max_size)


@dataclass
class GeometricSchedule:
    """``n_k = min(max_fraction N, max_size, ceil(initial N growth^k))``, at least ``min_size``.

    Args:
        initial: ``n_0 / N``, in ``(0, 1]``.
        growth: ``gamma >= 1``.
        max_fraction: cap as a fraction of ``N``.
        min_size: floor on the size.
        max_size: absolute cap, or ``None``.
    """

    initial: float
    growth: float
    max_fraction: float = 1.0
    min_size: int = 1
    max_size: Optional[int] = None

    def __post_init__(self) -> None:
        if not 0.0 < self.initial <= 1.0:
            raise ValueError(f"initial must be in (0, 1], got {self.initial}")
        if self.growth < 1.0:
            raise ValueError(f"growth must be >= 1, got {self.growth}")
        if not 0.0 < self.max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in (0, 1], got {self.max_fraction}")

    def size(self, iteration: int, total: int) -> int:
        # log-space avoids overflow of growth^k for long runs
        log_n = math.log(self.initial * total) + iteration * math.log(self.growth)
        n = total if log_n >= math.log(total) else math.exp(log_n)
        return _clamp(n, total, self.min_size, self.max_fraction, self.max_size)


@dataclass
class Sample:
    """The index sets of one HF iteration (sorted int64 CPU tensors)."""

    iteration: int
    grad: Tensor
    curv: Tensor


class DataSampler:
    """Draws gradient, curvature and held-out index sets with a private generator.

    Args:
        grad_schedule: gradient sample sizes.
        curv_schedule: curvature sample sizes.
        seed: seed of the generator.
        nested: curvature sample = prefix of the gradient sample's permutation.
        heldout_size: ``None`` = the whole held-out set every iteration; else a fresh
            random subset of this size each iteration.
    """

    def __init__(
        self,
        grad_schedule: SampleSchedule,
        curv_schedule: SampleSchedule,
        seed: int = 0,
        nested: bool = True,
        heldout_size: Optional[int] = None,
    ) -> None:
        self.grad_schedule = grad_schedule
        self.curv_schedule = curv_schedule
        self.nested = nested
        self.heldout_size = heldout_size
        self.iteration = 0
        self.generator = torch.Generator().manual_seed(seed)

    def sizes(self, total: int, iteration: Optional[int] = None) -> tuple[int, int]:
        k = self.iteration if iteration is None else iteration
        return self.grad_schedule.size(k, total), self.curv_schedule.size(k, total)

    def draw(self, total: int) -> Sample:
        """Samples for the current iteration (does not advance; see :meth:`advance`)."""
        if total < 1:
            raise ValueError("empty training set")
        n_grad, n_curv = self.sizes(total)
        perm = torch.randperm(total, generator=self.generator)
        grad = perm[:n_grad] if n_grad < total else torch.arange(total)
        if self.nested:
            curv = perm[:n_curv]
        else:
            curv = torch.randperm(total, generator=self.generator)[:n_curv]
        return Sample(self.iteration, grad.sort().values, curv.sort().values)

    def heldout(self, total: int) -> Tensor:
        """Held-out indices for the current iteration."""
        if self.heldout_size is None or self.heldout_size >= total:
            return torch.arange(total)
        return torch.randperm(total, generator=self.generator)[: self.heldout_size].sort().values

    def advance(self) -> None:
        self.iteration += 1

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.generator.set_state(state["generator"])
