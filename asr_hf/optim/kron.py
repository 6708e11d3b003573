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
"""

from __future__ import annotations

import enum
import logging
import math
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
# Factor helpers
# --------------------------------------------------------------------------------------


def warmup_decay(step: int, decay: float) -> float:
    """``min(1 - 1/(k+1), decay)`` for step ``k = 0, 1, ...``: the first factor estimate is the
    first batch's, then a running mean, until the exponential ``decay`` takes over."""
    return min(1.0 - 1.0 / (step + 1), decay)


def damped_inverse(mat: torch.Tensor, damping: float | torch.Tensor) -> torch.Tensor:
    """``(M + damping I)^{-1}`` for a symmetric PSD ``M`` of shape ``(n, n)``.

    Cholesky first; if that fails (round-off making ``M + damping I`` numerically
    indefinite), an eigendecomposition with eigenvalues clamped at ``damping``.
    """
    n = mat.shape[0]
    sym = 0.5 * (mat + mat.T)
    damped = sym + damping * torch.eye(n, dtype=mat.dtype, device=mat.device)
    chol, info = torch.linalg.cholesky_ex(damped)
    if int(info) == 0:
        return torch.cholesky_inverse(chol)
    evals, evecs = torch.linalg.eigh(sym)
    evals = evals.clamp_min(0) + damping
    return (evecs / evals) @ evecs.T


def pi_split(a: torch.Tensor, g: torch.Tensor, damping: float) -> tuple[float, float]:
    """Tikhonov damping ``lambda`` split between the factors (Martens & Grosse 2015, 6.3).

    ``pi = sqrt((tr(A)/d_A) / (tr(G)/d_G))``; returns ``(pi sqrt(lambda), sqrt(lambda)/pi)``
    for ``A`` and ``G``.  Falls back to ``pi = 1`` when a trace is not positive.
    """
    ta = float(torch.trace(a)) / a.shape[0]
    tg = float(torch.trace(g)) / g.shape[0]
    root = math.sqrt(damping)
    if not (ta > 0 and tg > 0 and math.isfinite(ta) and math.isfinite(tg)):
        return root, root
    pi = math.sqrt(ta / tg)
    return pi * root, root / pi


class LMDamping(str, enum.Enum):
    """The second (Levenberg-Marquardt) step of K-BFGS double damping."""

    #: The authors' rule (the default): Powell damping with ``B = I``; if
    #: ``s~.y / s~.s~ < mu2``: ``y~ = t y + (1-t) s~`` so that ``s~.y~ = mu2 s~.s~``.
    POWELL = "powell"
    #: ``y~ = y + mu2 s~`` on every pair (the pair of ``B + mu2 I``; not the authors' code).
    ADDITIVE = "additive"


class PairTest(str, enum.Enum):
    """Which (damped) curvature pairs a BFGS factor accepts; see :func:`pair_accepted`."""

    #: The authors' test (the default): ``s.y > 1e-4 (s.s) |g|``.
    AUTHORS = "authors"
    #: The scale-free ``s.y > 1e-12 |s| |y|`` used here before.
    RELATIVE = "relative"


#: The constant of the authors' pair test ``s.y > 1e-4 (s.s) |g|``.
AUTHORS_PAIR_EPS = 1e-4
#: The constant of the relative pair test ``s.y > 1e-12 |s| |y|``.
RELATIVE_PAIR_EPS = 1e-12


def pair_accepted(s: torch.Tensor, y: torch.Tensor, g: torch.Tensor, test: PairTest | str) -> torch.Tensor:
    """Whether a BFGS factor should take the pair ``(s, y)``; a 0-d bool tensor (no sync).

    * ``AUTHORS`` (Goldfarb, Ren & Bahamou's code): ``s.y > 1e-4 (s.s) |g|`` with ``g`` the
      factor's gradient-like vector of this step: the mean pre-activation gradient ``gbar``
      (at the parameters before the update, not smoothed) for ``H_G``, the mean homogeneous
      layer input ``abar`` for the Hessian-action pair of ``H_A``.  With ``g = 0`` it is
      ``s.y > 0``.  After LM damping ``s.y >= mu2 s.s``, so it rejects a pair only when
      ``|g| >= mu2 / 1e-4``, i.e. it stops updating a factor on a very large gradient.
    * ``RELATIVE``: ``s.y > 1e-12 |s| |y|`` (``g`` unused).

    Both are invariant to a common scale of ``s`` and ``y``.  Non-finite pairs are rejected.

    Args:
        s, y: the pair, shape ``(n,)``.
        g: shape ``(m,)`` (any length; only its norm is used).
        test: which test.
    """
    test = PairTest(test)
    sy = torch.dot(s, y)
    if test is PairTest.AUTHORS:
        ss = torch.dot(s, s)
        ok = sy > AUTHORS_PAIR_EPS * ss * torch.linalg.vector_norm(g).to(ss)
        ok = ok & torch.isfinite(ss)
    else:
        ok = sy > RELATIVE_PAIR_EPS * s.norm() * y.norm()
    return ok & torch.isfinite(sy)


@dataclass
class DampedPair:
    """Output of :func:`double_damping`.  ``powell`` / ``lm`` are 0-d bool tensors telling
    whether each step changed the pair; ``theta`` is Powell's ``theta`` (1 when inactive)."""

    s: torch.Tensor
    y: torch.Tensor
    theta: torch.Tensor
    powell: torch.Tensor
    lm: torch.Tensor


def double_damping(
    s: torch.Tensor,
    y: torch.Tensor,
    h_apply: Callable[[torch.Tensor], torch.Tensor],
    mu1: float = 0.2,
    mu2: float = 0.0,
    lm: LMDamping | str = LMDamping.POWELL,
) -> DampedPair:
    """Double damping of a BFGS pair (Goldfarb, Ren & Bahamou 2020, Alg. 3).

    Let ``H ~ B^{-1}`` be the current inverse approximation (SPD, applied by ``h_apply``).

    1. Powell damping *on H* (the inverse form of Powell's damped BFGS: ``s`` and ``y`` swap
       roles and ``B`` becomes ``H``): if ``s.y < mu1 y.H.y``,
       ``theta = (1 - mu1) yHy / (yHy - s.y)`` and ``s~ = theta s + (1 - theta) H y``, which
       gives ``s~.y = mu1 yHy`` exactly; otherwise ``s~ = s``.  Either way
       ``s~.y >= mu1 y.H.y`` (bounds ``|y|^2 / s~.y <= 1 / (mu1 lambda_min(H))``).
    2. Levenberg-Marquardt damping with ``mu2`` (``sqrt(lambda)`` in K-BFGS):

       * ``POWELL`` (the authors' code, ``get_BFGS_ModifiedDamping``): Powell damping with
         ``B = I``: if ``s~.y < mu2 s~.s~``, ``t = (1 - mu2) s~.s~ / (s~.s~ - s~.y)`` and
         ``y~ = t y + (1 - t) s~`` (``s~.y~ = mu2 s~.s~`` exactly); otherwise ``y~ = y``,
         so a well-conditioned pair passes unchanged.  For ``mu2 <= 1``, ``t`` lies in
         ``[0, 1)``.  The formula holds for any ``mu2``; only ``s~.y = s~.s~`` with
         ``mu2 > 1`` makes its denominator vanish, and that case takes the limit
         ``y~ = y + (mu2 - 1) s~``.
       * ``ADDITIVE``: ``y~ = y + mu2 s~`` on every pair (the pair of ``B + mu2 I``).

       Either way ``s~.y~ >= mu2 |s~|^2`` (curvature condition, and
       ``|s~|^2 / s~.y~ <= 1/mu2`` bounds the growth of ``H``).

    The ratio ``|y~|^2 / s~.y~`` is at most ``2/(mu1 lambda_min(H)) + 2/mu2`` for ``POWELL``
    with ``mu2 <= 1`` and ``2/(mu1 lambda_min(H)) + 2 mu2`` for ``ADDITIVE``; then for the
    BFGS update ``lambda_max(B+) <= lambda_max(B) + |y~|^2 / s~.y~`` (``B`` bounded above)
    and ``lambda_max(H+) <= lambda_max(H) (1 + sqrt(|y~|^2/(mu2 s~.y~)))^2 + 1/mu2`` (``H``
    bounded above, i.e. ``B`` bounded below).

    All branches use ``torch.where`` (no host synchronisation).

    Args:
        s, y: the pair, shape ``(n,)``.
        h_apply: ``v -> H v`` for ``v`` of shape ``(n,)``.
        mu1: Powell threshold in ``(0, 1)``.
        mu2: LM damping ``>= 0``.
        lm: which LM form.
    """
    if not 0.0 < mu1 < 1.0:
        raise ValueError(f"mu1 must be in (0, 1), got {mu1}")
    if mu2 < 0:
        raise ValueError(f"mu2 must be >= 0, got {mu2}")
    lm = LMDamping(lm)
    hy = h_apply(y)
    yhy = torch.dot(y, hy)
    sy = torch.dot(s, y)
    powell = sy < mu1 * yhy
    denom = torch.where(powell, yhy - sy, torch.ones_like(yhy))
    theta = torch.where(powell, (1.0 - mu1) * yhy / denom, torch.ones_like(yhy))
    s_t = theta * s + (1.0 - theta) * hy
    if lm is LMDamping.ADDITIVE:
        y_t = y + mu2 * s_t
        lm_active = torch.as_tensor(mu2 > 0, device=s.device)
    else:
        ss = torch.dot(s_t, s_t)
        sy_t = torch.dot(s_t, y)
        lm_active = sy_t < mu2 * ss
        den = ss - sy_t
        mix = lm_active & (den != 0)
        t = torch.where(mix, (1.0 - mu2) * ss / torch.where(mix, den, torch.ones_like(den)), torch.ones_like(ss))
        limit = lm_active & ~mix  # s~.y = s~.s~ < mu2 s~.s~ (mu2 > 1 only)
        shift = torch.where(limit, torch.full_like(ss, mu2 - 1.0), torch.zeros_like(ss))
        y_t = t * y + (1.0 - t) * s_t + shift * s_t
    return DampedPair(s_t, y_t, theta, powell, lm_active)


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
    "AUTHORS_PAIR_EPS",
    "RELATIVE_PAIR_EPS",
    "SUPPORTED_LAYER_TYPES",
    "CaptureSpec",
    "DampedPair",
    "KronCapture",
    "KronLayer",
    "KroneckerOptimizer",
    "LMDamping",
    "LayerStats",
    "PairTest",
    "damped_inverse",
    "double_damping",
    "find_layers",
    "iter_layers_with_stats",
    "pair_accepted",
    "pi_split",
    "warmup_decay",
]
