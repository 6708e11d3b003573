"""Kronecker-factored curvature machinery shared by KFAC, K-BFGS and K-BFGS(L).

Notation (one tracked layer, a minibatch of ``N`` rows):

* ``a_i`` (``d_in``): the layer input of row ``i``; ``abar_i = [a_i; 1]`` when the layer has a
  bias, else ``a_i``; ``d_a = d_in + 1`` or ``d_in``.
* ``h_i = W a_i + b`` (``d_out``): the pre-activation (the layer output).
* ``g_i = d l_i / d h_i`` (``d_out``): the gradient of row ``i``'s own loss ``l_i``.  The
  closure's loss is ``L = (1/N) sum_i l_i`` when ``batch_averaged`` (then ``g_i = N dL/dh_i``)
  or ``L = sum_i l_i`` otherwise (``g_i = dL/dh_i``).
* The gradient *matrix* of the layer is ``Grad = [dL/dW, dL/db]`` of shape ``(d_out, d_a)``;
  for a batch-averaged loss ``Grad = (1/N) sum_i g_i abar_i^T``.

The per-layer curvature block is approximated by a Kronecker product ``A (x) G`` with
``A = E[abar abar^T]`` (``d_a x d_a``, the *activation factor*) and a ``d_out x d_out``
*pre-activation factor* ``G`` (KFAC: ``E[g g^T]``; K-BFGS: a BFGS approximation of
``E[d^2 l / d h^2]``).  Because ``(A (x) G)^{-1} vec(Grad) = vec(G^{-1} Grad A^{-1})``, the
preconditioned direction of a layer is the matrix product ``H_G Grad H_A`` with
``H_G ~ G^{-1}`` and ``H_A ~ A^{-1}``.

Supported layers: :class:`torch.nn.Linear` (any subclass, with or without bias; inputs of
shape ``(..., d_in)``, every leading position counts as a row).  No other layer type is
preconditioned: trainable parameters of other modules (convolutions, embeddings,
normalisation layers, RNNs) and of Linear layers matched by ``skip_layers`` receive the
same momentum / weight-decay step on their raw gradient (plain SGD with the optimizer's
learning rate).  A Linear layer called several times in one forward has its statistics
pooled over the calls.

Capture happens through module hooks, only inside an optimizer step: a forward hook on
each tracked layer records input / output statistics and registers a tensor hook on the
output for ``g`` (tensor hooks registered before an in-place op, e.g.
``ReLU(inplace=True)``, still receive the gradient of the original pre-activation).  For
the sampled (true) Fisher of KFAC, a forward hook on the root module draws targets from the
model's predictive distribution and back-propagates their summed loss right away, with
``retain_graph=True``, so the closure's own backward still works.  The root module's
output must therefore be the network output the :class:`~asr_hf.optim.base.LossKind`
refers to (logits for cross entropy / BCE, predictions for MSE), shape ``(..., C)``.

Here: layers, capture hooks and the optimizer skeleton.  The factor arithmetic (damped
inverses, damping split, BFGS pair damping) is in :mod:`asr_hf.optim.kron_factors`, the
loss algebra and target sampling in :mod:`asr_hf.optim.losses`, and the factored inverse as
a linear operator on flat vectors (to precondition CG) in :mod:`asr_hf.optim.kron_operator`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch import nn

from asr_hf.optim.base import Closure, LossKind
from asr_hf.optim.losses import loss_sum, sample_targets
from asr_hf.optim.momentum import MomentumRule, momentum_

logger = logging.getLogger(__name__)

SUPPORTED_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear,)


# --------------------------------------------------------------------------------------
# Layers and hooks
# --------------------------------------------------------------------------------------


@dataclass
class KronLayer:
    """One preconditioned layer: ``h = W a + b`` with ``W`` of shape ``(d_out, d_in)``."""

    name: str
    module: nn.Linear

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    @property
    def bias(self) -> Optional[torch.Tensor]:
        b = self.module.bias
        return b if b is not None and b.requires_grad else None

    @property
    def d_in(self) -> int:
        return self.module.in_features

    @property
    def d_out(self) -> int:
        return self.module.out_features

    @property
    def d_a(self) -> int:
        """Size of the activation factor: ``d_in + 1`` with a bias, else ``d_in``."""
        return self.d_in + (1 if self.bias is not None else 0)

    def params(self) -> list[torch.Tensor]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def homogeneous(self, a: torch.Tensor) -> torch.Tensor:
        """``(rows, d_in) -> (rows, d_a)``: append a column of ones when there is a bias."""
        if self.bias is None:
            return a
        return torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)

    def grad_matrix(self) -> torch.Tensor:
        """``[dL/dW, dL/db]``, shape ``(d_out, d_a)`` (zeros where ``.grad`` is None)."""
        w = self.weight
        gw = w.grad if w.grad is not None else torch.zeros_like(w)
        if self.bias is None:
            return gw.detach().clone()
        b = self.bias
        gb = b.grad if b.grad is not None else torch.zeros_like(b)
        return torch.cat([gw.detach(), gb.detach().unsqueeze(1)], dim=1)

    def param_matrix(self) -> torch.Tensor:
        """``[W, b]``, shape ``(d_out, d_a)``."""
        if self.bias is None:
            return self.weight.detach().clone()
        return torch.cat([self.weight.detach(), self.bias.detach().unsqueeze(1)], dim=1)

    def add_(self, delta: torch.Tensor, alpha: float) -> None:
        """``[W, b] += alpha * delta`` for ``delta`` of shape ``(d_out, d_a)``."""
        with torch.no_grad():
            self.weight.add_(delta[:, : self.d_in], alpha=alpha)
            if self.bias is not None:
                self.bias.add_(delta[:, self.d_in], alpha=alpha)


def find_layers(model: nn.Module, skip_layers: Sequence[str] = ()) -> list[KronLayer]:
    """The supported layers of ``model`` with a trainable weight, in module order.

    Args:
        model: the network.
        skip_layers: regular expressions; a layer whose qualified module name (e.g.
            ``"encoder.3"``) or class name matches one (``re.search``) is not tracked.
    """
    patterns = [re.compile(p) for p in skip_layers]
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, SUPPORTED_LAYER_TYPES) or not module.weight.requires_grad:
            continue
        if any(p.search(name) or p.search(type(module).__name__) for p in patterns):
            continue
        layers.append(KronLayer(name, module))
    return layers


@dataclass(frozen=True)
class CaptureSpec:
    """Which per-layer statistics one closure call should record."""

    input_mean: bool = False
    input_cov: bool = False
    output_mean: bool = False
    grad_mean: bool = False
    grad_cov: bool = False
    sampled_grad_cov: bool = False


@dataclass
class LayerStats:
    """Sums over the rows of one closure call (divide by ``rows`` for means).

    Attributes:
        rows: number of rows (examples / positions) seen by the layer.
        a_sum: ``sum_i abar_i``, ``(d_a,)``.
        aa_sum: ``sum_i abar_i abar_i^T``, ``(d_a, d_a)``.
        h_sum: ``sum_i h_i``, ``(d_out,)``.
        g_sum: ``sum_i g_i`` (per-row loss gradients, see module docstring), ``(d_out,)``.
        gg_sum: ``sum_i g_i g_i^T``, ``(d_out, d_out)``.
        sampled_gg_sum: ``sum_i gs_i gs_i^T`` with ``gs_i`` the gradient of row ``i``'s loss
            at targets sampled from the model, ``(d_out, d_out)``.
    """

    rows: int = 0
    grad_rows: int = 0
    sampled_rows: int = 0
    a_sum: Optional[torch.Tensor] = None
    aa_sum: Optional[torch.Tensor] = None
    h_sum: Optional[torch.Tensor] = None
    g_sum: Optional[torch.Tensor] = None
    gg_sum: Optional[torch.Tensor] = None
    sampled_gg_sum: Optional[torch.Tensor] = None

    def mean(self, key: str) -> torch.Tensor:
        """Mean of a recorded statistic over its rows (raises if it was not recorded)."""
        value = getattr(self, key)
        if value is None:
            raise RuntimeError(f"statistic {key!r} was not captured")
        rows = {"g_sum": self.grad_rows, "gg_sum": self.grad_rows, "sampled_gg_sum": self.sampled_rows}
        n = rows.get(key, self.rows)
        if n == 0:
            raise RuntimeError(f"statistic {key!r} saw no rows")
        return value / n


def _acc(old: Optional[torch.Tensor], new: torch.Tensor) -> torch.Tensor:
    return new if old is None else old + new


def _homogeneous_sum(layer: KronLayer, a_sum: torch.Tensor, rows: int) -> torch.Tensor:
    """``sum_i abar_i`` from ``sum_i a_i`` (``(d_in,) -> (d_a,)``)."""
    if layer.bias is None:
        return a_sum
    return torch.cat([a_sum, a_sum.new_full((1,), float(rows))])


def _homogeneous_gram(layer: KronLayer, a: torch.Tensor, a_sum: torch.Tensor, rows: int) -> torch.Tensor:
    """``sum_i abar_i abar_i^T`` (``(d_a, d_a)``) without materialising ``[a, 1]``:
    the blocks are ``a^T a``, ``sum_i a_i`` and ``rows``."""
    if layer.bias is None:
        return a.T @ a
    d = layer.d_in
    out = a.new_empty(d + 1, d + 1)
    out[:d, :d] = a.T @ a
    out[:d, d] = a_sum
    out[d, :d] = a_sum
    out[d, d] = rows
    return out


class KronCapture:
    """Forward / tensor hooks that record Kronecker-factor statistics of tracked layers.

    Hooks are installed once and do nothing outside :meth:`capturing`.

    Args:
        model: the root module; its output feeds the loss (see module docstring).
        layers: the tracked layers (from :func:`find_layers`).
        batch_averaged: the closure's loss is a mean over rows (``g_i = N dL/dh_i``).
        loss_kind: the output/loss pair, needed only for sampled-Fisher capture.
        seed: seed of the private generator used to sample targets (its state is part of
            the optimizer state, so a resumed run draws the same targets).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[KronLayer],
        batch_averaged: bool = True,
        loss_kind: Optional[LossKind] = None,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.layers = list(layers)
        self.batch_averaged = batch_averaged
        self.loss_kind = loss_kind
        self.seed = seed
        self.generator: Optional[torch.Generator] = None
        self._spec: Optional[CaptureSpec] = None
        self._stats: dict[str, LayerStats] = {}
        self._pending: list[tuple[KronLayer, torch.Tensor]] = []  # outputs of this forward
        self._sampling = False
        self._handles = [
            layer.module.register_forward_hook(self._make_forward_hook(layer)) for layer in self.layers
        ]
        self._handles.append(model.register_forward_hook(self._root_forward_hook))

    def remove(self) -> None:
        """Remove every hook from the model."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def capturing(self, spec: CaptureSpec) -> "_CaptureContext":
        """Context manager: record ``spec``'s statistics during the closure call inside."""
        return _CaptureContext(self, spec)

    def _begin(self, spec: CaptureSpec) -> None:
        if spec.sampled_grad_cov and self.loss_kind is None:
            raise ValueError("sampled Fisher capture needs a loss_kind")
        self._spec = spec
        self._stats = {layer.name: LayerStats() for layer in self.layers}
        self._pending = []

    def _end(self) -> dict[str, LayerStats]:
        self._spec = None
        self._pending = []
        stats, self._stats = self._stats, {}
        return stats

    # -- hooks -------------------------------------------------------------------------

    def _make_forward_hook(self, layer: KronLayer) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            spec = self._spec
            if spec is None or self._sampling or not torch.is_grad_enabled():
                return
            st = self._stats[layer.name]
            with torch.no_grad():
                a = inputs[0].detach().reshape(-1, layer.d_in).to(layer.weight.dtype)
                rows = a.shape[0]
                st.rows += rows
                if spec.input_mean or spec.input_cov:
                    a_sum = a.sum(0)
                    if spec.input_mean:
                        st.a_sum = _acc(st.a_sum, _homogeneous_sum(layer, a_sum, rows))
                    if spec.input_cov:
                        st.aa_sum = _acc(st.aa_sum, _homogeneous_gram(layer, a, a_sum, rows))
                if spec.output_mean:
                    st.h_sum = _acc(st.h_sum, output.detach().reshape(-1, layer.d_out).sum(0))
            if output.requires_grad and (spec.grad_mean or spec.grad_cov or spec.sampled_grad_cov):
                output.register_hook(self._make_grad_hook(layer, rows))
                if spec.sampled_grad_cov:
                    self._pending.append((layer, output))

        return hook

    def _make_grad_hook(self, layer: KronLayer, rows: int) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            spec = self._spec
            if spec is None:
                return
            st = self._stats[layer.name]
            with torch.no_grad():
                g = grad.detach().reshape(-1, layer.d_out).to(layer.weight.dtype)
                if self._sampling:
                    # The sampled loss is a sum over rows: g already is per-row.
                    st.sampled_rows += g.shape[0]
                    st.sampled_gg_sum = _acc(st.sampled_gg_sum, g.T @ g)
                    return
                if self.batch_averaged:
                    g = g * rows
                st.grad_rows += g.shape[0]
                if spec.grad_mean:
                    st.g_sum = _acc(st.g_sum, g.sum(0))
                if spec.grad_cov:
                    st.gg_sum = _acc(st.gg_sum, g.T @ g)

        return hook

    def _root_forward_hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        spec = self._spec
        if spec is None or not spec.sampled_grad_cov or self._sampling or not self._pending:
            return
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                "sampled-Fisher KFAC needs the root module to return the output tensor the loss "
                f"uses, got {type(output).__name__}; use fisher='empirical'"
            )
        pending, self._pending = self._pending, []
        assert self.loss_kind is not None
        if self.generator is None or self.generator.device != output.device:
            if self.generator is not None:
                logger.warning("sampling RNG moves from %s to %s; reseeding", self.generator.device, output.device)
            self.generator = torch.Generator(device=output.device)
            self.generator.manual_seed(self.seed)
        with torch.no_grad():
            targets = sample_targets(output.detach(), self.loss_kind, self.generator)
        loss = loss_sum(output, targets, self.loss_kind)
        weights = list({id(layer.weight): layer.weight for layer, _ in pending}.values())
        self._sampling = True
        try:
            # Differentiating w.r.t. the weights (not the outputs, which in-place ops may have
            # rebased) runs the outputs' tensor hooks with d(sampled loss)/dh; nothing is
            # accumulated into .grad.
            torch.autograd.grad(loss, weights, retain_graph=True, allow_unused=True)
        finally:
            self._sampling = False

    # -- generator state ----------------------------------------------------------------

    def generator_state(self) -> Optional[dict[str, Any]]:
        if self.generator is None:
            return None
        return {"device": str(self.generator.device), "state": self.generator.get_state()}

    def load_generator_state(self, state: Optional[dict[str, Any]], fallback_seed: int) -> None:
        if state is None:
            self.generator = None
            return
        device = torch.device(state["device"])
        try:
            gen = torch.Generator(device=device)
            gen.set_state(state["state"].cpu())
        except (RuntimeError, TypeError) as exc:
            logger.warning("cannot restore the sampling RNG on %s (%s); reseeding", device, exc)
            gen = torch.Generator(device=self._model_device())
            gen.manual_seed(fallback_seed)
        self.generator = gen

    def _model_device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")


class _CaptureContext:
    def __init__(self, capture: KronCapture, spec: CaptureSpec) -> None:
        self.capture = capture
        self.spec = spec
        self.stats: dict[str, LayerStats] = {}

    def __enter__(self) -> "_CaptureContext":
        self.capture._begin(self.spec)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stats = self.capture._end()


# --------------------------------------------------------------------------------------
# The common optimizer skeleton
# --------------------------------------------------------------------------------------


class KroneckerOptimizer(torch.optim.Optimizer):
    """Base of KFAC / K-BFGS: momentum, weight decay, the update, state and stats.

    One parameter group holds the hyper-parameters ``lr``, ``damping``, ``momentum``,
    ``weight_decay`` (plus the subclass's), so torch LR schedulers work and
    ``load_state_dict`` restores them.  Per tracked layer, tensors live in
    ``self.state[layer.weight]`` (moved with the optimizer state by torch's own
    ``load_state_dict``); global state (step count, RNG, L-BFGS memories) is saved under the
    extra ``"kron"`` key of :meth:`state_dict`.

    The gradient used for a layer is ``m <- mu m + (1 - mu) (Grad + wd [W, b])`` (the
    authors' momentum: a moving average of the weight-decayed gradient, ``m_0 = 0``);
    parameters update as ``[W, b] <- [W, b] - lr * P(m)`` with the subclass's
    preconditioner ``P``.  Untracked parameters use ``P = identity``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        damping: float,
        momentum: float,
        weight_decay: float,
        skip_layers: Sequence[str] = (),
        batch_averaged: bool = True,
        loss_kind: Optional[LossKind] = None,
        seed: int = 0,
        **extra_defaults: Any,
    ) -> None:
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if damping <= 0:
            raise ValueError(f"damping must be > 0, got {damping}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        defaults = dict(lr=lr, damping=damping, momentum=momentum, weight_decay=weight_decay, **extra_defaults)
        super().__init__(params, defaults)
        self.model = model
        self.layers = find_layers(model, skip_layers)
        if not self.layers:
            logger.warning("no supported layer to precondition; every parameter gets plain SGD steps")
        tracked = {id(p) for layer in self.layers for p in layer.params()}
        self.untracked = [p for p in params if id(p) not in tracked]
        self.capture = KronCapture(
            model, self.layers, batch_averaged=batch_averaged, loss_kind=loss_kind, seed=seed
        )
        self.steps = 0
        self._stats: dict[str, torch.Tensor | float] = {}

    # -- hyper-parameters ---------------------------------------------------------------

    @property
    def hp(self) -> dict[str, Any]:
        """The (single) parameter group's hyper-parameters."""
        return self.param_groups[0]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.param_groups:
            raise ValueError(f"{type(self).__name__} keeps all parameters in one group")
        super().add_param_group(param_group)

    # -- shared pieces -----------------------------------------------------------------

    def layer_state(self, layer: KronLayer) -> dict[str, Any]:
        return self.state[layer.weight]

    def momentum_gradient(self, layer: KronLayer) -> tuple[torch.Tensor, torch.Tensor]:
        """``m <- mu m + (1 - mu) (Grad + wd [W, b])``, shape ``(d_out, d_a)``.

        Returns ``(m, |Grad|^2)`` (the squared norm of the raw gradient, for stats)."""
        g = layer.grad_matrix()
        sq = g.pow(2).sum()
        wd = self.hp["weight_decay"]
        if wd:
            g.add_(layer.param_matrix(), alpha=wd)
        return momentum_(self.layer_state(layer), g, self.hp["momentum"], MomentumRule.AVERAGE), sq

    def precondition(self, layer: KronLayer, m: torch.Tensor) -> torch.Tensor:
        """``P(m) = H_G m H_A`` for a gradient-shaped matrix ``m`` of ``layer``
        (``(d_out, d_a)``), i.e. ``(A (x) G)^{-1} vec(m)``; the subclass's factors."""
        raise NotImplementedError

    def step_untracked(self, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """SGD step (momentum, weight decay) on untracked parameters; returns the squared
        norms of their raw gradients and of their update directions."""
        device, dtype = self._device_dtype()
        grad_sq = torch.zeros((), device=device, dtype=dtype)
        upd_sq = torch.zeros((), device=device, dtype=dtype)
        wd = self.hp["weight_decay"]
        for p in self.untracked:
            if p.grad is None:
                continue
            g = p.grad.detach().clone()
            grad_sq += g.pow(2).sum().to(grad_sq)
            if wd:
                g.add_(p.detach(), alpha=wd)
            d = momentum_(self.state[p], g, self.hp["momentum"], MomentumRule.AVERAGE)
            p.add_(d, alpha=-lr)
            upd_sq += d.pow(2).sum().to(upd_sq)
        return grad_sq, upd_sq

    @staticmethod
    def _run_closure(closure: Optional[Closure]) -> torch.Tensor:
        if closure is None:
            raise ValueError("this optimizer needs a closure: opt.step(closure)")
        with torch.enable_grad():
            loss = closure()
        if not isinstance(loss, torch.Tensor):
            loss = torch.as_tensor(loss)
        return loss.detach()

    # -- stats and state ---------------------------------------------------------------

    def last_stats(self) -> dict[str, float]:
        """Statistics of the last step (floats; converting may synchronise a GPU)."""
        return {k: float(v) for k, v in self._stats.items()}

    def _extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "rng": self.capture.generator_state()}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.steps = int(extra["steps"])
        self.capture.load_generator_state(extra.get("rng"), fallback_seed=self.steps)

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["kron"] = self._extra_state()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sd = dict(state_dict)
        extra = sd.pop("kron", None)
        if extra is None:
            raise ValueError("not a Kronecker-optimizer state dict (no 'kron' entry)")
        super().load_state_dict(sd)
        self._load_extra_state(extra)

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = self.layers[0].weight if self.layers else self.untracked[0]
        return p.device, p.dtype


def iter_layers_with_stats(
    layers: Iterable[KronLayer], stats: dict[str, LayerStats]
) -> Iterator[tuple[KronLayer, Optional[LayerStats]]]:
    """Pair each layer with its statistics (``None`` when it saw no rows this call)."""
    for layer in layers:
        st = stats.get(layer.name)
        yield layer, (st if st is not None and st.rows > 0 else None)


__all__ = [
    "SUPPORTED_LAYER_TYPES",
    "CaptureSpec",
    "KronCapture",
    "KronLayer",
    "KroneckerOptimizer",
    "LayerStats",
    "find_layers",
    "iter_layers_with_stats",
]
