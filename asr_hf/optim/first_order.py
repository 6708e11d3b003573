"""First-order baselines (SGD, Adam, AdamW, RMSprop) behind the common optimizer contract.

Each class is a thin subclass of its :mod:`torch.optim` counterpart: the update is
torch's own; ``step(closure)`` evaluates the closure (forward + backward on the minibatch),
records the loss and the gradient norm, and applies torch's update;
``last_stats()`` returns them as floats.  ``state_dict`` / ``load_state_dict`` are
torch's (exact resume).

Registered names (all :attr:`OptimizerKind.MINIBATCH`):

* ``sgd``: lr, momentum, dampening, nesterov, weight_decay;
* ``adam``: lr, betas, eps, weight_decay, amsgrad;
* ``adamw``: lr, betas, eps, weight_decay (decoupled, Loshchilov & Hutter 2019), amsgrad;
* ``rmsprop``: lr, alpha, eps, momentum, centered, weight_decay.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import torch
from torch import nn

from asr_hf.optim.base import Closure, LossKind, OptimizerKind
from asr_hf.optim.registry import register_optimizer


class _StatsMixin:
    """Wraps ``torch.optim`` ``step`` to run the closure first and keep per-step stats."""

    param_groups: list[dict[str, Any]]
    _last: dict[str, torch.Tensor | float]

    def _stats_step(self, closure: Optional[Closure], torch_step: Any) -> Optional[torch.Tensor]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        gnorm = torch.linalg.vector_norm(torch.stack([g.detach().norm() for g in grads])) if grads else 0.0
        torch_step()
        self._last = {"lr": float(self.param_groups[0]["lr"]), "grad_norm": gnorm}
        if loss is not None:
            self._last["loss"] = loss.detach() if isinstance(loss, torch.Tensor) else float(loss)
        return loss

    def last_stats(self) -> dict[str, float]:
        """Loss (when a closure was given), learning rate and gradient norm of the last step."""
        return {k: float(v) for k, v in getattr(self, "_last", {}).items()}


class SGD(_StatsMixin, torch.optim.SGD):
    """:class:`torch.optim.SGD` with ``last_stats()``."""

    def step(self, closure: Optional[Closure] = None) -> Optional[torch.Tensor]:  # type: ignore[override]
        return self._stats_step(closure, lambda: torch.optim.SGD.step(self))


class Adam(_StatsMixin, torch.optim.Adam):
    """:class:`torch.optim.Adam` with ``last_stats()``."""

    def step(self, closure: Optional[Closure] = None) -> Optional[torch.Tensor]:  # type: ignore[override]
        return self._stats_step(closure, lambda: torch.optim.Adam.step(self))


class AdamW(_StatsMixin, torch.optim.AdamW):
    """:class:`torch.optim.AdamW` with ``last_stats()``."""

    def step(self, closure: Optional[Closure] = None) -> Optional[torch.Tensor]:  # type: ignore[override]
        return self._stats_step(closure, lambda: torch.optim.AdamW.step(self))


class RMSprop(_StatsMixin, torch.optim.RMSprop):
    """:class:`torch.optim.RMSprop` with ``last_stats()``."""

    def step(self, closure: Optional[Closure] = None) -> Optional[torch.Tensor]:  # type: ignore[override]
        return self._stats_step(closure, lambda: torch.optim.RMSprop.step(self))


def _params(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _pair(value: Sequence[float] | Iterable[float]) -> tuple[float, float]:
    a, b = tuple(value)
    return float(a), float(b)


@register_optimizer("sgd", kind=OptimizerKind.MINIBATCH, data_parallel="ddp", bf16_safe=True, newbob=True)
def build_sgd(
    model: nn.Module,
    loss_kind: LossKind,
    lr: float = 0.01,
    momentum: float = 0.9,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> SGD:
    """SGD with (Nesterov) momentum and weight decay."""
    return SGD(
        _params(model), lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay
    )


@register_optimizer("adam", kind=OptimizerKind.MINIBATCH, data_parallel="ddp", bf16_safe=True)
def build_adam(
    model: nn.Module,
    loss_kind: LossKind,
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
) -> Adam:
    """Adam (torch.optim.Adam)."""
    return Adam(_params(model), lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


@register_optimizer("adamw", kind=OptimizerKind.MINIBATCH, data_parallel="ddp", bf16_safe=True)
def build_adamw(
    model: nn.Module,
    loss_kind: LossKind,
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    amsgrad: bool = False,
) -> AdamW:
    """AdamW: Adam with decoupled weight decay (torch.optim.AdamW)."""
    return AdamW(_params(model), lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


@register_optimizer("rmsprop", kind=OptimizerKind.MINIBATCH, data_parallel="ddp", bf16_safe=True)
def build_rmsprop(
    model: nn.Module,
    loss_kind: LossKind,
    lr: float = 1e-3,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float = 0.0,
    centered: bool = False,
    weight_decay: float = 0.0,
) -> RMSprop:
    """RMSprop (torch.optim.RMSprop)."""
    return RMSprop(
        _params(model), lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered, weight_decay=weight_decay
    )


__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "build_adam", "build_adamw", "build_rmsprop", "build_sgd"]
