"""Name -> optimizer factory registry, so configs select optimizers by name.

Usage::

    @register_optimizer("hf", kind=OptimizerKind.SAMPLED)
    def build_hf(model, loss_kind, **cfg): ...

    opt = build_optimizer("hf", model, LossKind.CROSS_ENTROPY, **cfg)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from asr_hf.optim.base import LossKind, OptimizerKind

Factory = Callable[..., Any]


@dataclass(frozen=True)
class RegisteredOptimizer:
    name: str
    kind: OptimizerKind
    factory: Factory
    help: str


_REGISTRY: dict[str, RegisteredOptimizer] = {}


def register_optimizer(name: str, kind: OptimizerKind, help: str = "") -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(model, loss_kind, **options)`` under ``name``."""

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"optimizer {name!r} registered twice")
        _REGISTRY[name] = RegisteredOptimizer(name, kind, factory, help or (factory.__doc__ or "").strip())
        return factory

    return deco


def available_optimizers() -> dict[str, RegisteredOptimizer]:
    _load_builtin()
    return dict(_REGISTRY)


def optimizer_kind(name: str) -> OptimizerKind:
    return _lookup(name).kind


def build_optimizer(name: str, model: torch.nn.Module, loss_kind: LossKind, **options: Any) -> Any:
    """Build the optimizer registered as ``name`` for ``model``."""
    return _lookup(name).factory(model, LossKind(loss_kind), **options)


def _lookup(name: str) -> RegisteredOptimizer:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown optimizer {name!r}; known: {sorted(_REGISTRY)}") from None


def _load_builtin() -> None:
    # Importing the modules runs their @register_optimizer decorators.
    import importlib

    for module in ("asr_hf.optim.first_order", "asr_hf.optim.hf", "asr_hf.optim.kfac", "asr_hf.optim.kbfgs"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
