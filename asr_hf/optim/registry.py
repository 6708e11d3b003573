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

#: How an optimizer runs data-parallel over torch.distributed:
#: ``"ddp"``: gradients averaged by DistributedDataParallel (first-order methods and the
#: gradient-statistics preconditioners of :mod:`asr_hf.optim.peers`, whose state is a
#: function of the averaged gradients and so stays identical on every rank);
#: ``"reducer"``: the optimizer takes a ``reducer=`` and does its own collectives (HF
#: family, approximated-Hessian SGD); ``"none"``: single process only (its curvature
#: statistics are rank-local, e.g. KFAC, K-BFGS).
DATA_PARALLEL_MODES = ("ddp", "reducer", "none")


@dataclass(frozen=True)
class RegisteredOptimizer:
    name: str
    kind: OptimizerKind
    factory: Factory
    help: str
    data_parallel: str = "none"


_REGISTRY: dict[str, RegisteredOptimizer] = {}


def register_optimizer(
    name: str, kind: OptimizerKind, help: str = "", data_parallel: str = "none"
) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(model, loss_kind, **options)`` under ``name``.

    ``data_parallel`` is one of :data:`DATA_PARALLEL_MODES`.
    """
    if data_parallel not in DATA_PARALLEL_MODES:
        raise ValueError(f"data_parallel must be one of {DATA_PARALLEL_MODES}, got {data_parallel!r}")

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"optimizer {name!r} registered twice")
        doc = help or (factory.__doc__ or "").strip()
        _REGISTRY[name] = RegisteredOptimizer(name, kind, factory, doc, data_parallel)
        return factory

    return deco


def available_optimizers() -> dict[str, RegisteredOptimizer]:
    _load_builtin()
    return dict(_REGISTRY)


def optimizer_kind(name: str) -> OptimizerKind:
    return _lookup(name).kind


def optimizer_info(name: str) -> RegisteredOptimizer:
    """The registry entry (kind, data-parallel mode, help) of ``name``."""
    return _lookup(name)


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

    for module in (
        "asr_hf.optim.first_order", "asr_hf.optim.hf", "asr_hf.optim.kfac", "asr_hf.optim.kbfgs", "asr_hf.optim.ahsgd",
        "asr_hf.optim.peers",
    ):  # fmt: skip
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
