"""KFAC: Kronecker-factored approximate curvature (Martens & Grosse 2015), the baseline of
Goldfarb, Ren & Bahamou (2020).

Per tracked layer (notation of :mod:`asr_hf.optim.kron`):

* ``A <- d A + (1 - d) mean_i abar_i abar_i^T``  (``d_a x d_a``),
* ``G <- d G + (1 - d) mean_i g_i g_i^T``        (``d_out x d_out``),

with ``d = min(1 - 1/(k+1), factor_decay)`` at factor update ``k`` (the first update takes
the batch's estimate).  ``g_i`` is the gradient of row ``i``'s loss at targets *sampled from
the model's predictive distribution* (``fisher="sampled"``, the true Fisher: softmax
cross entropy -> categorical, MSE -> ``N(y, I)``, BCE -> Bernoulli; one extra backward
pass through the retained graph on factor-update steps, no extra forward), or at the data
targets (``fisher="empirical"``, the empirical Fisher; no extra pass).

Every ``inv_every`` steps (and on each of the first ``inv_every`` steps, as the authors'
baseline does) the damped inverses are recomputed:
``H_A = (A + pi sqrt(lambda) I)^{-1}``, ``H_G = (G + sqrt(lambda)/pi I)^{-1}`` with
``pi = 1`` (the authors' baseline) or the trace-norm ``pi`` of Martens & Grosse
(``pi_damping=True``).  The update is ``[W, b] <- [W, b] - lr H_G m H_A`` with ``m`` the
momentum average of the weight-decayed gradient (see :class:`KroneckerOptimizer`).

Supported layers: ``nn.Linear`` only (others get plain SGD steps); see :mod:`.kron`.
"""

from __future__ import annotations

import enum
import logging
from typing import Any, Optional, Sequence

import torch
from torch import nn

from asr_hf.optim.base import Closure, LossKind, OptimizerKind
from asr_hf.optim.kron import CaptureSpec, KronLayer, KroneckerOptimizer, iter_layers_with_stats
from asr_hf.optim.kron_factors import damped_inverse, pi_split, warmup_decay
from asr_hf.optim.momentum import ema_
from asr_hf.optim.registry import register_optimizer

logger = logging.getLogger(__name__)


class FisherKind(str, enum.Enum):
    SAMPLED = "sampled"  # targets drawn from the model: the true Fisher
    EMPIRICAL = "empirical"  # data targets: the empirical Fisher


class KFAC(KroneckerOptimizer):
    """KFAC for ``nn.Linear`` layers, driven by ``opt.step(closure)``.

    Args:
        model: the network; its output is what ``loss_kind`` refers to.
        loss_kind: output/loss pair (needed for sampled targets).
        lr: learning rate.
        damping: Tikhonov ``lambda``; each factor gets ``sqrt(lambda)`` (times ``pi``/``1/pi``).
        momentum: moving-average coefficient of the gradient (0 disables).
        weight_decay: L2 coefficient added to the gradient.
        factor_decay: moving-average coefficient of ``A`` and ``G``.
        factor_every: update the factors every this many steps.
        inv_every: recompute the inverses every this many steps.
        fisher: ``"sampled"`` or ``"empirical"``.
        pi_damping: split the damping by the trace-norm ``pi``.
        skip_layers: regexes of layer names / class names not to precondition.
        batch_averaged: the closure's loss is a mean over rows.
        seed: seed of the target-sampling generator.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_kind: LossKind = LossKind.CROSS_ENTROPY,
        *,
        lr: float = 0.1,
        damping: float = 3.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        factor_decay: float = 0.9,
        factor_every: int = 1,
        inv_every: int = 20,
        fisher: FisherKind | str = FisherKind.SAMPLED,
        pi_damping: bool = False,
        skip_layers: Sequence[str] = (),
        batch_averaged: bool = True,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= factor_decay < 1.0:
            raise ValueError(f"factor_decay must be in [0, 1), got {factor_decay}")
        if factor_every < 1 or inv_every < 1:
            raise ValueError("factor_every and inv_every must be >= 1")
        self.fisher = FisherKind(fisher)
        self.loss_kind = LossKind(loss_kind)
        super().__init__(
            model,
            lr=lr,
            damping=damping,
            momentum=momentum,
            weight_decay=weight_decay,
            skip_layers=skip_layers,
            batch_averaged=batch_averaged,
            loss_kind=self.loss_kind,
            seed=seed,
            factor_decay=factor_decay,
            factor_every=factor_every,
            inv_every=inv_every,
            pi_damping=pi_damping,
        )
        self._factor_updates = 0

    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        extra["factor_updates"] = self._factor_updates
        return extra

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        super()._load_extra_state(extra)
        self._factor_updates = int(extra["factor_updates"])

    def precondition(self, layer: KronLayer, m: torch.Tensor) -> torch.Tensor:
        """``H_G m H_A`` with the damped inverses of the last refresh; ``m`` itself while the
        layer has no factors yet (not seen by a forward pass)."""
        state = self.layer_state(layer)
        if "HA" not in state:
            return m
        return state["HG"] @ m @ state["HA"]

    @torch.no_grad()
    def step(self, closure: Optional[Closure] = None) -> torch.Tensor:  # type: ignore[override]
        """One KFAC step on the closure's minibatch; returns the closure's loss."""
        hp = self.hp
        k = self.steps
        update_factors = k % hp["factor_every"] == 0
        update_inverses = k < hp["inv_every"] or k % hp["inv_every"] == 0
        spec = CaptureSpec(
            input_cov=update_factors,
            grad_cov=update_factors and self.fisher is FisherKind.EMPIRICAL,
            sampled_grad_cov=update_factors and self.fisher is FisherKind.SAMPLED,
        )
        with self.capture.capturing(spec) as cap:
            loss = self._run_closure(closure)

        lr, lam = hp["lr"], hp["damping"]
        decay = warmup_decay(self._factor_updates, hp["factor_decay"])
        device, dtype = self._device_dtype()
        grad_sq = torch.zeros((), device=device, dtype=dtype)
        upd_sq = torch.zeros((), device=device, dtype=dtype)
        unprec = 0
        for layer, st in iter_layers_with_stats(self.layers, cap.stats):
            state = self.layer_state(layer)
            if update_factors and st is not None:
                a_new = st.mean("aa_sum")
                g_new = st.mean("sampled_gg_sum" if self.fisher is FisherKind.SAMPLED else "gg_sum")
                if "A" not in state:
                    state["A"], state["G"] = a_new.clone(), g_new.clone()
                else:
                    ema_(state["A"], a_new, decay)
                    ema_(state["G"], g_new, decay)
            if "A" in state and (update_inverses or "HA" not in state):
                if hp["pi_damping"]:
                    da, dg = pi_split(state["A"], state["G"], lam)
                else:
                    da = dg = lam**0.5
                state["HA"] = damped_inverse(state["A"], da)
                state["HG"] = damped_inverse(state["G"], dg)
            m, sq = self.momentum_gradient(layer)
            grad_sq += sq
            direction = self.precondition(layer, m)
            unprec += "HA" not in state
            layer.add_(direction, alpha=-lr)
            upd_sq += direction.pow(2).sum()
        extra_grad_sq, extra_upd_sq = self.step_untracked(lr)
        grad_sq += extra_grad_sq
        upd_sq += extra_upd_sq

        if update_factors:
            self._factor_updates += 1
        self.steps += 1
        self._stats = {
            "loss": loss,
            "lr": lr,
            "damping": lam,
            "grad_norm": grad_sq.sqrt(),
            "update_norm": upd_sq.sqrt() * lr,
            "factors_updated": float(update_factors),
            "inverses_updated": float(update_inverses),
            "unpreconditioned_layers": float(unprec),
        }
        return loss


@register_optimizer("kfac", kind=OptimizerKind.MINIBATCH, options_from=(KFAC,))
def build_kfac(model: nn.Module, loss_kind: LossKind, **options: Any) -> KFAC:
    """KFAC (sampled or empirical Fisher, sqrt(lambda) or pi damping, periodic inverses).

    Options: lr, damping, momentum, weight_decay, factor_decay, factor_every, inv_every,
    fisher (sampled|empirical), pi_damping, skip_layers, batch_averaged, seed.
    """
    return KFAC(model, loss_kind, **options)


__all__ = ["FisherKind", "KFAC", "build_kfac"]
