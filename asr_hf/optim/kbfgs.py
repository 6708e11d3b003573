"""K-BFGS and K-BFGS(L): Kronecker-factored quasi-Newton methods (Goldfarb, Ren & Bahamou,
"Practical Quasi-Newton Methods for Training Deep Neural Networks", NeurIPS 2020).

Per tracked ``nn.Linear`` layer (notation of :mod:`asr_hf.optim.kron`) the Hessian block is
approximated by ``A (x) G`` and the direction is ``H_G m H_A`` (``m``: momentum average of
the weight-decayed gradient matrix, ``(d_out, d_a)``).  One step on a minibatch:

1. First closure call at ``theta``: records ``A_batch = mean_i abar_i abar_i^T``, the means
   ``abar``, ``hbar = mean_i h_i`` and ``gbar = mean_i g_i`` (per-row loss gradients).
2. Activation factor: ``A <- d A + (1 - d) A_batch`` with ``d = min(1 - 1/(k+1), beta)``
   (``beta = factor_decay = 0.9``; the warm-up replaces the authors' initial full-data pass,
   which an optimizer driven by a closure cannot make).  ``H_A ~ (A + mu_A I)^{-1}`` with
   ``mu_A = sqrt(lambda)`` (LM damping of ``A``):

   * ``a_inverse="bfgs"`` (the paper's choice): ``H_A`` starts as the exact inverse on the
     first step, then takes one "Hessian-action" BFGS update per step with
     ``s_A = H_A abar``, ``y_A = (A + mu_A I) s_A`` (so ``s_A.y_A > 0`` always and the new
     ``H_A`` inverts ``A + mu_A I`` exactly along ``s_A``);
   * ``a_inverse="exact"``: ``H_A = (A + mu_A I)^{-1}`` recomputed every ``a_inv_every``
     steps (Cholesky).
3. Update ``theta <- theta - lr H_G m H_A`` (all layers at once; untracked parameters take
   the plain momentum step).
4. Second closure call at the new ``theta`` on the *same* minibatch: ``hbar'``, ``gbar'``;
   ``s = hbar' - hbar``, ``y = gbar' - gbar`` (``d_out``), optionally smoothed by a moving
   average with ``sy_decay`` (the authors' code uses 0.9; BFGS and both damping tests are
   invariant to a common scale of ``s`` and ``y``).
5. Double damping (:func:`asr_hf.optim.kron_factors.double_damping`): Powell on ``H_G`` with
   ``mu1 = 0.2``, then Levenberg-Marquardt with ``mu2 = sqrt(lambda)``, by default in the
   authors' form (``lm_damping="powell"``: ``y`` is mixed toward ``s~`` only when
   ``s~.y / s~.s~ < mu2``); the damped pair satisfies ``s~.y~ >= mu2 |s~|^2 > 0``.
6. Pair test (:func:`asr_hf.optim.kron_factors.pair_accepted`), by default the authors'
   (``pair_test="authors"``): ``H_G`` takes the pair only if ``s~.y~ > 1e-4 (s~.s~) |gbar|``
   (``gbar`` of the first pass, not smoothed), ``H_A`` its Hessian-action pair only if
   ``s_A.y_A > 1e-4 (s_A.s_A) |abar|``; ``pair_test="relative"``: ``s.y > 1e-12 |s| |y|``.
7. ``H_G`` update from ``(s~, y~)``: K-BFGS: dense BFGS inverse update
   ``H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T`` (``rho = 1/s.y``; satisfies the
   secant equation ``H+ y = s``), ``H_G`` starting at ``I``.  K-BFGS(L): the pair joins an
   :class:`~asr_hf.optim.lbfgs.LBFGSMemory` (``memory`` pairs, ``H0 = initial_scale I``,
   default ``I`` as in the authors' code) applied by the two-loop recursion.

The Hessian-action vector of ``H_A`` is the mean homogeneous input ``abar = [mean a; 1]``:
its last coordinate is 1, as in the authors' final code (their first upload used the mean
of ``mean a`` there and was changed to 1 in the commit "update to Hessian action V2").

The closure is therefore called twice per step; ``step`` returns the first loss and
``last_stats()["loss_new"]`` is the loss after the update on the same minibatch.

Supported layers: ``nn.Linear`` only (others get plain SGD steps); see :mod:`.kron`.
"""

from __future__ import annotations

import enum
import logging
import math
from typing import Any, Optional, Sequence

import torch
from torch import nn

from asr_hf.optim.base import Closure, LossKind, OptimizerKind
from asr_hf.optim.kron import CaptureSpec, KronLayer, KroneckerOptimizer, iter_layers_with_stats
from asr_hf.optim.kron_factors import (
    LMDamping,
    PairTest,
    damped_inverse,
    double_damping,
    pair_accepted,
    warmup_decay,
)
from asr_hf.optim.lbfgs import LBFGSMemory
from asr_hf.optim.momentum import ema_
from asr_hf.optim.registry import register_optimizer

logger = logging.getLogger(__name__)


class AInverse(str, enum.Enum):
    BFGS = "bfgs"  # Hessian-action BFGS updates of H_A (the paper)
    EXACT = "exact"  # (A + mu_A I)^{-1} every a_inv_every steps


def bfgs_inverse_update(
    h: torch.Tensor,
    s: torch.Tensor,
    y: torch.Tensor,
    min_curvature: float = 1e-12,
    accept: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense BFGS update of an inverse-Hessian approximation.

    ``H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T`` with ``rho = 1 / (s.y)``,
    expanded as ``H + (rho + rho^2 y.H.y) s s^T - rho (H y s^T + s y^T H)`` (``O(n^2)``).
    ``H+`` is symmetric, satisfies the secant equation ``H+ y = s`` and is positive definite
    when ``H`` is and ``s.y > 0``.  A pair with ``s.y <= min_curvature |s| |y|`` (or a
    non-finite result, or ``accept`` false) leaves ``H`` unchanged.

    Args:
        h: ``(n, n)`` symmetric positive definite.
        s, y: ``(n,)``.
        min_curvature: the relative curvature test's constant (0: ``s.y > 0``).
        accept: optional 0-d bool tensor from a caller's own pair test
            (:func:`~asr_hf.optim.kron_factors.pair_accepted`).

    Returns:
        ``(H+, accepted)`` with ``accepted`` a 0-d bool tensor (no host synchronisation).
    """
    sy = torch.dot(s, y)
    ok = sy > min_curvature * s.norm() * y.norm()
    if accept is not None:
        ok = ok & accept
    rho = torch.where(ok, 1.0 / torch.where(ok, sy, torch.ones_like(sy)), torch.zeros_like(sy))
    hy = h @ y
    coef = rho + rho * rho * torch.dot(y, hy)
    ok = ok & torch.isfinite(coef) & torch.isfinite(hy).all() & torch.isfinite(s).all()
    coef = torch.where(ok, coef, torch.zeros_like(coef))
    rho = torch.where(ok, rho, torch.zeros_like(rho))
    # H + U C U^T with U = [s, Hy] (n, 2) and C = [[coef, -rho], [-rho, 0]]: one rank-2 pass.
    u = torch.stack([s, hy], dim=1)
    zero = torch.zeros_like(rho)
    c = torch.stack([torch.stack([coef, -rho]), torch.stack([-rho, zero])])
    new = torch.addmm(h, u @ c, u.T)
    return torch.where(ok, new, h), ok


class KBFGS(KroneckerOptimizer):
    """K-BFGS for ``nn.Linear`` layers (dense BFGS ``H_G``), driven by ``opt.step(closure)``.

    Args:
        model: the network.
        loss_kind: output/loss pair (kept for the common factory signature; K-BFGS uses the
            closure's data targets only).
        lr: learning rate (the paper searches ``1e-4 .. 1``).
        damping: ``lambda``; ``mu_A = mu2 = sqrt(lambda)`` unless given.
        momentum: moving-average coefficient of the gradient (paper: 0.9).
        weight_decay: L2 coefficient added to the gradient (authors: 1e-5).
        factor_decay: moving-average coefficient ``beta`` of ``A`` (paper: 0.9).
        sy_decay: moving-average coefficient of ``s`` and ``y`` (authors' code: 0.9; 0 off).
        powell_mu: Powell threshold ``mu1`` (paper: 0.2).
        lm_mu: LM damping ``mu2`` of the ``G`` pair (default ``sqrt(lambda)``).
        lm_damping: ``"powell"`` (default; the authors' rule: ``y`` mixed toward ``s~`` only
            when ``s~.y / s~.s~ < mu2``) or ``"additive"`` (``y + mu2 s~`` on every pair);
            see :func:`~asr_hf.optim.kron_factors.double_damping`.
        pair_test: ``"authors"`` (default; ``s.y > 1e-4 (s.s) |g|``) or ``"relative"``
            (``s.y > 1e-12 |s| |y|``); see :func:`~asr_hf.optim.kron_factors.pair_accepted`.
        a_damping: ``mu_A`` added to ``A`` before inverting (default ``sqrt(lambda)``).
        a_inverse: ``"bfgs"`` (Hessian-action BFGS, the paper) or ``"exact"``.
        a_inv_every: refresh period of the exact ``H_A``.
        skip_layers: regexes of layer names / class names not to precondition.
        batch_averaged: the closure's loss is a mean over rows.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_kind: LossKind = LossKind.CROSS_ENTROPY,
        *,
        lr: float = 0.3,
        damping: float = 0.3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        factor_decay: float = 0.9,
        sy_decay: float = 0.9,
        powell_mu: float = 0.2,
        lm_mu: Optional[float] = None,
        lm_damping: LMDamping | str = LMDamping.POWELL,
        pair_test: PairTest | str = PairTest.AUTHORS,
        a_damping: Optional[float] = None,
        a_inverse: AInverse | str = AInverse.BFGS,
        a_inv_every: int = 20,
        skip_layers: Sequence[str] = (),
        batch_averaged: bool = True,
    ) -> None:
        if not 0.0 <= factor_decay < 1.0 or not 0.0 <= sy_decay < 1.0:
            raise ValueError("factor_decay and sy_decay must be in [0, 1)")
        if not 0.0 < powell_mu < 1.0:
            raise ValueError(f"powell_mu must be in (0, 1), got {powell_mu}")
        if a_inv_every < 1:
            raise ValueError("a_inv_every must be >= 1")
        self.loss_kind = LossKind(loss_kind)
        self.lm_damping = LMDamping(lm_damping)
        self.pair_test = PairTest(pair_test)
        self.a_inverse = AInverse(a_inverse)
        super().__init__(
            model,
            lr=lr,
            damping=damping,
            momentum=momentum,
            weight_decay=weight_decay,
            skip_layers=skip_layers,
            batch_averaged=batch_averaged,
            factor_decay=factor_decay,
            sy_decay=sy_decay,
            powell_mu=powell_mu,
            lm_mu=lm_mu,
            a_damping=a_damping,
            a_inv_every=a_inv_every,
        )

    # -- the pre-activation factor H_G (dense here, L-BFGS in the subclass) -------------

    def hg_apply(self, layer: KronLayer, v: torch.Tensor) -> torch.Tensor:
        """``H_G v`` for ``v`` of shape ``(d_out,)`` or ``(d_out, k)``."""
        state = self.layer_state(layer)
        if "HG" not in state:
            return v.clone()
        return state["HG"] @ v

    def hg_update(self, layer: KronLayer, s: torch.Tensor, y: torch.Tensor, accept: torch.Tensor) -> torch.Tensor:
        """Fold the damped pair into ``H_G`` if ``accept`` (0-d bool, the pair test) holds;
        returns a 0-d bool tensor (taken)."""
        state = self.layer_state(layer)
        if "HG" not in state:
            state["HG"] = torch.eye(layer.d_out, device=s.device, dtype=s.dtype)
        state["HG"], ok = bfgs_inverse_update(state["HG"], s, y, min_curvature=0.0, accept=accept)
        return ok

    def precondition(self, layer: KronLayer, m: torch.Tensor) -> torch.Tensor:
        """``H_G m H_A`` (``H_G`` alone before the layer's first ``A``)."""
        direction = self.hg_apply(layer, m)
        state = self.layer_state(layer)
        if "HA" in state:
            direction = direction @ state["HA"]
        return direction

    def hg_dense(self, layer: KronLayer) -> torch.Tensor:
        """The explicit ``H_G`` (``d_out x d_out``; for tests and inspection)."""
        eye = torch.eye(layer.d_out, device=layer.weight.device, dtype=layer.weight.dtype)
        return self.hg_apply(layer, eye)

    # -- the step ------------------------------------------------------------------------

    def _mu(self) -> tuple[float, float]:
        hp = self.hp
        root = math.sqrt(hp["damping"])
        mu_a = hp["a_damping"] if hp["a_damping"] is not None else root
        mu2 = hp["lm_mu"] if hp["lm_mu"] is not None else root
        return mu_a, mu2

    @torch.no_grad()
    def step(self, closure: Optional[Closure] = None) -> torch.Tensor:  # type: ignore[override]
        """One K-BFGS step: two closure calls on the same minibatch; returns the first loss."""
        hp = self.hp
        k = self.steps
        lr = hp["lr"]
        mu_a, mu2 = self._mu()
        spec = CaptureSpec(input_mean=True, input_cov=True, output_mean=True, grad_mean=True)
        with self.capture.capturing(spec) as cap:
            loss = self._run_closure(closure)

        device, dtype = self._device_dtype()
        grad_sq = torch.zeros((), device=device, dtype=dtype)
        upd_sq = torch.zeros((), device=device, dtype=dtype)
        decay = warmup_decay(k, hp["factor_decay"])
        before: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for layer, st in iter_layers_with_stats(self.layers, cap.stats):
            state = self.layer_state(layer)
            if st is not None:
                a_new = st.mean("aa_sum")
                if "A" not in state:
                    state["A"] = a_new.clone()
                else:
                    ema_(state["A"], a_new, decay)
                refresh = self.a_inverse is AInverse.EXACT and k % hp["a_inv_every"] == 0
                if "HA" not in state or refresh:
                    state["HA"] = damped_inverse(state["A"], mu_a)
                if st.grad_rows > 0:
                    before[layer.name] = (st.mean("a_sum"), st.mean("h_sum"), st.mean("g_sum"))
            m, sq = self.momentum_gradient(layer)
            grad_sq += sq
            direction = self.precondition(layer, m)
            layer.add_(direction, alpha=-lr)
            upd_sq += direction.pow(2).sum()
        extra_grad_sq, extra_upd_sq = self.step_untracked(lr)
        grad_sq += extra_grad_sq
        upd_sq += extra_upd_sq

        # Second pass at the new parameters, same minibatch: the (s, y) pairs of H_G.
        spec2 = CaptureSpec(output_mean=True, grad_mean=True)
        with self.capture.capturing(spec2) as cap2:
            loss_new = self._run_closure(closure)

        n_pairs = 0
        n_powell = torch.zeros((), device=device)
        n_lm = torch.zeros((), device=device)
        n_ok = torch.zeros((), device=device)
        for layer, st in iter_layers_with_stats(self.layers, cap2.stats):
            if st is None or st.grad_rows == 0 or layer.name not in before:
                continue
            state = self.layer_state(layer)
            abar, hbar, gbar = before[layer.name]
            s = st.mean("h_sum") - hbar
            y = st.mean("g_sum") - gbar
            if hp["sy_decay"] > 0:
                if "s_avg" not in state:
                    state["s_avg"], state["y_avg"] = torch.zeros_like(s), torch.zeros_like(y)
                s = ema_(state["s_avg"], s, hp["sy_decay"]).clone()
                y = ema_(state["y_avg"], y, hp["sy_decay"]).clone()
            pair = double_damping(
                s, y, lambda v: self.hg_apply(layer, v), hp["powell_mu"], mu2, self.lm_damping
            )
            ok = self.hg_update(layer, pair.s, pair.y, pair_accepted(pair.s, pair.y, gbar, self.pair_test))
            n_pairs += 1
            n_powell += pair.powell.to(n_powell)
            n_lm += pair.lm.to(n_lm)
            n_ok += ok.to(n_ok)
            if self.a_inverse is AInverse.BFGS:
                # Hessian-action BFGS: the pair (H_A abar, (A + mu_A I) H_A abar).
                s_a = state["HA"] @ abar
                y_a = state["A"] @ s_a + mu_a * s_a
                accept_a = pair_accepted(s_a, y_a, abar, self.pair_test)
                state["HA"], _ = bfgs_inverse_update(state["HA"], s_a, y_a, min_curvature=0.0, accept=accept_a)

        self.steps += 1
        denom = max(n_pairs, 1)
        self._stats = {
            "loss": loss,
            "loss_new": loss_new,
            "lr": lr,
            "damping": hp["damping"],
            "grad_norm": grad_sq.sqrt(),
            "update_norm": upd_sq.sqrt() * lr,
            "pairs": float(n_pairs),
            "powell_frac": n_powell / denom,
            "lm_frac": n_lm / denom,
            "pairs_rejected": n_pairs - n_ok,
        }
        return loss


class KBFGSL(KBFGS):
    """K-BFGS(L): as :class:`KBFGS` but ``H_G`` is an L-BFGS operator.

    Args:
        memory: number of ``(s, y)`` pairs kept per layer (paper: 100).
        initial_scale: ``H0 = initial_scale I`` (authors: 1); ``None`` uses the newest
            pair's ``s.y / y.y``.
        **kwargs: as :class:`KBFGS`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_kind: LossKind = LossKind.CROSS_ENTROPY,
        *,
        memory: int = 100,
        initial_scale: Optional[float] = 1.0,
        **kwargs: Any,
    ) -> None:
        if memory < 1:
            raise ValueError(f"memory must be >= 1, got {memory}")
        self.memory = memory
        self.initial_scale = initial_scale
        super().__init__(model, loss_kind, **kwargs)
        # The pair test runs before push (pair_accepted); the memory only checks s.y > 0.
        self.memories: dict[str, LBFGSMemory] = {
            layer.name: LBFGSMemory(history=memory, min_curvature=0.0, initial_scale=initial_scale)
            for layer in self.layers
        }

    def hg_apply(self, layer: KronLayer, v: torch.Tensor) -> torch.Tensor:
        return self.memories[layer.name].apply(v)

    def hg_update(self, layer: KronLayer, s: torch.Tensor, y: torch.Tensor, accept: torch.Tensor) -> torch.Tensor:
        ok = bool(accept) and self.memories[layer.name].push(s, y)
        return torch.tensor(ok, device=s.device)

    def _extra_state(self) -> dict[str, Any]:
        extra = super()._extra_state()
        extra["lbfgs"] = {name: mem.state_dict() for name, mem in self.memories.items()}
        return extra

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        super()._load_extra_state(extra)
        saved = extra["lbfgs"]
        if set(saved) != set(self.memories):
            raise ValueError(f"L-BFGS memories for layers {sorted(saved)}, expected {sorted(self.memories)}")
        for layer in self.layers:
            w = layer.weight
            st = dict(saved[layer.name])
            st["s"] = [t.to(device=w.device, dtype=w.dtype) for t in st["s"]]
            st["y"] = [t.to(device=w.device, dtype=w.dtype) for t in st["y"]]
            self.memories[layer.name].load_state_dict(st)


@register_optimizer("kbfgs", kind=OptimizerKind.MINIBATCH, options_from=(KBFGS,))
def build_kbfgs(model: nn.Module, loss_kind: LossKind, **options: Any) -> KBFGS:
    """K-BFGS (dense BFGS pre-activation factor, double damping, two passes per step).

    Options: lr, damping, momentum, weight_decay, factor_decay, sy_decay, powell_mu, lm_mu,
    lm_damping (powell|additive; default powell, the authors' rule), pair_test
    (authors|relative), a_damping, a_inverse (bfgs|exact), a_inv_every, skip_layers,
    batch_averaged.
    """
    return KBFGS(model, loss_kind, **options)


@register_optimizer("kbfgs_l", kind=OptimizerKind.MINIBATCH, options_from=(KBFGSL, KBFGS))
def build_kbfgs_l(model: nn.Module, loss_kind: LossKind, **options: Any) -> KBFGSL:
    """K-BFGS(L) (L-BFGS pre-activation factor); options of kbfgs plus memory, initial_scale."""
    return KBFGSL(model, loss_kind, **options)


__all__ = ["AInverse", "KBFGS", "KBFGSL", "bfgs_inverse_update", "build_kbfgs", "build_kbfgs_l"]
