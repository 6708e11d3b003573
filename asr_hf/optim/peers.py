"""Peer curvature-aware first-order optimizers from heavyball (SOAP, Shampoo, PSGD-Kron).

These are the other "second-order-ish" methods a curvature optimizer is compared with; they
need only the minibatch gradient (their preconditioners are statistics of gradients), so
they run behind the same contract as the first-order baselines
(:mod:`asr_hf.optim.first_order`): ``step(closure)`` evaluates the closure, records the
loss and the gradient norm, then applies heavyball's update; ``last_stats()`` returns them;
``state_dict`` / ``load_state_dict`` are heavyball's.

Registered names (all :attr:`OptimizerKind.MINIBATCH`, ``data_parallel="ddp"``):

* ``soap``: :class:`heavyball.SOAP` (Vyas et al. 2024: Adam in the eigenbasis of
  Shampoo's Kronecker factors, re-estimated every ``precondition_frequency`` steps);
* ``shampoo``: :class:`heavyball.KLShampoo` (Lin et al. 2025: Shampoo whose Kronecker
  factors are accumulated by a KL-divergence fixed point, applied as
  ``prod_i Q_i diag(d_i)^(-1/2) Q_i^T`` to the momentum).  heavyball 3.2.1 has no plain
  Shampoo (Gupta et al. 2018); this is the Shampoo it ships;
* ``psgd``: :class:`heavyball.PSGDKron` (Li 2015; the "Kron" variant: a Kronecker-factored
  preconditioner ``P = Q^T Q`` fitted by Lie-group descent on gradient-whitening pairs
  ``(v, g)`` with random ``v``; no Hessian-vector products).

heavyball is an optional dependency (``pip install "asr_hf[peers]"``), imported when one
of these optimizers is built.  It keeps its state in float32 and expects float32 (or
bfloat16) parameters, as the trainer's models are; heavyball 3.2.1's SOAP fails on float64
parameters (a dtype mismatch in its einsum).

Data parallelism: under DistributedDataParallel every rank receives the same averaged
gradient, and each optimizer's state (moments, Kronecker factors, eigenbases, ``Q``) is a
deterministic function of that gradient sequence, so the rank-local states stay identical
and so do the updates.  PSGD also draws its probe vectors ``v`` from torch's global RNG;
the trainer seeds it identically on every rank and no rank-dependent code draws from it,
so the draws agree too.

torch.compile: heavyball compiles its fused kernels by default (mode
``max-autotune-no-cudagraphs``).  Here ``compile=False`` (the default) runs them eagerly:
on this project's 2-core CPU the autotuning took about 150 s before the first 30 steps of a
two-layer MLP finished (eager: 0.2 s).  heavyball reads that setting from a module-level
variable, so it is process-wide: the last optimizer built decides it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from asr_hf.optim.base import Closure, LossKind, OptimizerKind
from asr_hf.optim.first_order import _pair, _params, _StatsMixin
from asr_hf.optim.registry import register_optimizer

logger = logging.getLogger(__name__)

#: How to install the optional dependency these optimizers need.
PEERS_EXTRA = 'pip install "asr_hf[peers]"'


class MissingExtraError(ImportError):
    """An optional dependency of the selected optimizer is not installed."""


_compile_default: dict[str, Optional[str]] = {}  # heavyball's own compile mode, read once
_wrapped: dict[type, type] = {}


def _heavyball(name: str, compile: bool) -> Any:
    """Import heavyball (or raise :class:`MissingExtraError`) and set its compile mode."""
    try:
        import heavyball
    except ImportError as exc:
        raise MissingExtraError(
            f"optimizer {name!r} needs the optional dependency heavyball; install it with: {PEERS_EXTRA}"
        ) from exc
    utils = heavyball.utils
    default_mode = _compile_default.setdefault("mode", utils.compile_mode)
    mode = default_mode if compile else None
    if utils.compile_mode != mode:
        logger.info("heavyball torch.compile mode: %s (process-wide)", mode)
    utils.compile_mode = mode
    return heavyball


def _with_stats(cls: type) -> type:
    """``cls`` (a heavyball optimizer class) with the closure-first ``step`` and ``last_stats``."""
    if cls not in _wrapped:

        def step(self: Any, closure: Optional[Closure] = None) -> Optional[torch.Tensor]:
            return self._stats_step(closure, lambda: cls.step(self))

        _wrapped[cls] = type(
            cls.__name__,
            (_StatsMixin, cls),
            {"step": step, "__module__": __name__, "__doc__": f":class:`heavyball.{cls.__name__}` with ``last_stats()``."},
        )
    return _wrapped[cls]


def _build(name: str, cls_name: str, model: nn.Module, compile: bool, **kwargs: Any) -> torch.optim.Optimizer:
    heavyball = _heavyball(name, compile)
    cls: Callable[..., torch.optim.Optimizer] = _with_stats(getattr(heavyball, cls_name))
    return cls(_params(model), **kwargs)


@register_optimizer("soap", kind=OptimizerKind.MINIBATCH, data_parallel="ddp", bf16_safe=True)
def build_soap(
    model: nn.Module,
    loss_kind: LossKind,
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.95),
    shampoo_beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    precondition_frequency: int = 10,
    max_precond_dim: int = 2048,
    merge_dims: bool = True,
    precondition_1d: bool = False,
    warmup_steps: int = 0,
    compile: bool = False,
) -> torch.optim.Optimizer:
    """SOAP (heavyball.SOAP): Adam in Shampoo's eigenbasis.

    Options: lr, betas (Adam's, in the rotated basis), shampoo_beta (EMA of the Kronecker
    factors), eps, weight_decay (decoupled), precondition_frequency (steps between
    eigenbasis updates), max_precond_dim (a dimension above it is not rotated),
    merge_dims, precondition_1d (rotate biases too), warmup_steps (linear lr warm-up),
    compile (heavyball's torch.compile).
    """
    return _build(
        "soap", "SOAP", model, compile,
        lr=lr, betas=_pair(betas), shampoo_beta=shampoo_beta, eps=eps, weight_decay=weight_decay,
        precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim, merge_dims=merge_dims,
        precondition_1d=precondition_1d, warmup_steps=warmup_steps,
    )  # fmt: skip


@register_optimizer("shampoo", kind=OptimizerKind.MINIBATCH, data_parallel="ddp", bf16_safe=True)
def build_shampoo(
    model: nn.Module,
    loss_kind: LossKind,
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.95),
    shampoo_beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    precondition_frequency: int = 10,
    max_precond_dim: int = 2048,
    merge_dims: bool = True,
    precondition_1d: bool = False,
    warmup_steps: int = 0,
    init_factor: float = 0.1,
    compile: bool = False,
) -> torch.optim.Optimizer:
    """KL-Shampoo (heavyball.KLShampoo), the Shampoo of heavyball 3.2.1.

    Options: lr, betas (momentum, second moment), shampoo_beta (EMA of the Kronecker
    factors), eps, weight_decay (decoupled), precondition_frequency, max_precond_dim,
    merge_dims, precondition_1d, warmup_steps, init_factor (factors start at
    ``init_factor * I``), compile.
    """
    return _build(
        "shampoo", "KLShampoo", model, compile,
        lr=lr, betas=_pair(betas), shampoo_beta=shampoo_beta, eps=eps, weight_decay=weight_decay,
        precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim, merge_dims=merge_dims,
        precondition_1d=precondition_1d, warmup_steps=warmup_steps, init_factor=init_factor,
    )  # fmt: skip


@register_optimizer("psgd", kind=OptimizerKind.MINIBATCH, data_parallel="ddp", bf16_safe=True)
def build_psgd(
    model: nn.Module,
    loss_kind: LossKind,
    lr: float = 1e-3,
    beta: float = 0.9,
    weight_decay: float = 0.0,
    preconditioner_update_probability: Optional[float] = None,
    max_size_triangular: int = 2048,
    min_ndim_triangular: int = 2,
    memory_save_mode: Optional[str] = None,
    momentum_into_precond_update: bool = True,
    precond_lr: float = 0.1,
    merge_dims: bool = False,
    warmup_steps: int = 0,
    compile: bool = False,
) -> torch.optim.Optimizer:
    """PSGD-Kron (heavyball.PSGDKron): Kronecker-factored preconditioned SGD.

    Options: lr, beta (momentum), weight_decay (decoupled), preconditioner_update_probability
    (``None``: heavyball's schedule, 1 for 1000 steps then annealed to 0.03),
    max_size_triangular (a larger dimension gets a diagonal factor), min_ndim_triangular,
    memory_save_mode (None, one_diag, all_diag), momentum_into_precond_update, precond_lr,
    merge_dims, warmup_steps, compile.
    """
    extra = {} if preconditioner_update_probability is None else {
        "preconditioner_update_probability": float(preconditioner_update_probability)
    }  # fmt: skip
    return _build(
        "psgd", "PSGDKron", model, compile,
        lr=lr, beta=beta, weight_decay=weight_decay, max_size_triangular=max_size_triangular,
        min_ndim_triangular=min_ndim_triangular, memory_save_mode=memory_save_mode,
        momentum_into_precond_update=momentum_into_precond_update, precond_lr=precond_lr, merge_dims=merge_dims,
        warmup_steps=warmup_steps, **extra,
    )  # fmt: skip


__all__ = ["PEERS_EXTRA", "MissingExtraError", "build_psgd", "build_shampoo", "build_soap"]
