"""The trainer-facing contract shared by every optimizer in :mod:`asr_hf.optim`.

Two kinds of optimizer exist and the trainer drives each through one interface:

* :attr:`OptimizerKind.MINIBATCH` (SGD, Adam, RMSprop, KFAC, K-BFGS, K-BFGS(L)):
  a :class:`torch.optim.Optimizer`.  The trainer calls ``opt.step(closure)`` once
  per minibatch; ``closure()`` zeroes gradients, runs forward + backward on the
  *same* minibatch at the current parameters and returns the loss.  Optimizers
  that need a second evaluation (K-BFGS) call the closure again.
* :attr:`OptimizerKind.SAMPLED` (the Hessian-free family): one ``step(data)`` is
  one HF iteration.  The optimizer draws its own gradient / curvature samples
  from ``data.train`` (its sampling schedule and RNG are part of its state) and
  evaluates candidate steps on ``data.heldout``.

Both expose ``last_stats() -> dict[str, float]`` for logging and the usual
``state_dict()`` / ``load_state_dict()`` for exact resume.

Distributed plumbing stays out of the algorithms: an algorithm sums its
gradients, curvature products and losses through a :class:`Reducer`; the
single-process reducer is the identity.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import torch


class OptimizerKind(str, enum.Enum):
    MINIBATCH = "minibatch"
    SAMPLED = "sampled"


class LossKind(str, enum.Enum):
    """Output non-linearity + loss pairs with an analytic output Hessian."""

    CROSS_ENTROPY = "cross_entropy"  # softmax + NLL, targets: (N,) int64 class ids
    MSE = "mse"  # identity + 0.5 * squared error summed over outputs, targets: (N, C)
    BCE = "bce"  # logistic + binary cross-entropy summed over outputs, targets: (N, C) in [0, 1]


@runtime_checkable
class ExampleSource(Protocol):
    """Random access to a data set of ``len(self)`` examples (frames, images...).

    ``batches(indices, chunk_size)`` yields ``(inputs, targets)`` pairs on the
    optimizer's device covering ``indices`` in order, at most ``chunk_size``
    examples each, so products over data larger than GPU memory run in chunks.
    """

    def __len__(self) -> int: ...

    def batches(
        self, indices: torch.Tensor, chunk_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@dataclass
class SampledData:
    """What a SAMPLED optimizer's ``step`` receives.

    Attributes:
        train: the training examples gradient and curvature samples are drawn from.
        heldout: a held-out set (separate from dev) for choosing CG iterates and damping.
    """

    train: ExampleSource
    heldout: ExampleSource


class TensorSource:
    """An :class:`ExampleSource` over in-memory tensors (tests, small problems)."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(f"inputs have {inputs.shape[0]} rows but targets {targets.shape[0]}")
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batches(
        self, indices: torch.Tensor, chunk_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = indices.to(self.inputs.device)
        for start in range(0, indices.numel(), chunk_size):
            idx = indices[start : start + chunk_size]
            yield self.inputs[idx], self.targets[idx]


class Reducer(Protocol):
    """Collectives over data-parallel workers (identities in one process).

    ``all_reduce_`` sums in place; ``all_gather`` stacks every worker's tensor in rank
    order (shape ``(world_size, *shape)``); ``broadcast_`` copies rank ``src``'s tensor.
    For the trainer's bookkeeping also: ``all_gather_object`` (every worker's picklable
    object, a list in rank order), ``broadcast_object`` (rank ``src``'s object) and
    ``barrier`` (no worker leaves before all have arrived).
    The distributed implementation is :class:`asr_hf.optim.distributed.DistReducer`.
    """

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor: ...

    def all_gather_object(self, obj: Any) -> list[Any]: ...

    def broadcast_object(self, obj: Any, src: int = 0) -> Any: ...

    def barrier(self) -> None: ...

    @property
    def world_size(self) -> int: ...

    @property
    def rank(self) -> int: ...


class LocalReducer:
    """The single-process :class:`Reducer`: nothing to sum."""

    world_size = 1
    rank = 0

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.unsqueeze(0).clone()

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        return tensor

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return obj

    def barrier(self) -> None:
        pass


Closure = Callable[[], torch.Tensor]
