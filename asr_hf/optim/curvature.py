"""Curvature matrices of a network + loss as matrix-free linear operators.

For a model ``z_n = f(theta; x_n)`` (outputs ``z_n in R^C``) and a per-example loss
``l(z_n, t_n)`` the objective is the mean ``L(theta) = (1/N) sum_n l(f(theta; x_n), t_n)``.
With ``J_n = dz_n / dtheta`` (``C x P``) and ``H_n = d^2 l / dz_n^2`` (``C x C``):

* generalized Gauss-Newton ``G v = (1/N) sum_n J_n^T H_n J_n v`` (PSD whenever the loss
  is convex in ``z``), :class:`GGNOperator`;
* Hessian ``H v = d/dtheta (grad L . v)``, :class:`HessianOperator`.

Every operator returns ``(C + (l2 + damping) I) v``: ``l2`` is the curvature of an L2
term ``0.5 l2 |theta|^2`` in the objective and ``damping`` the Levenberg-Marquardt
``lambda``.  ``H_n`` is applied analytically, never formed:

* softmax cross-entropy (:attr:`LossKind.CROSS_ENTROPY`), ``p = softmax(z)``:
  ``H u = p * u - p (p . u)``;
* squared error ``0.5 |z - t|^2`` (:attr:`LossKind.MSE`): ``H u = u``;
* logistic outputs + binary cross-entropy (:attr:`LossKind.BCE`), ``s = sigmoid(z)``:
  ``H u = s (1 - s) * u``.

``J v`` is forward mode and ``J^T u`` reverse mode.  Three back ends compute them:

* ``sequential``: hand-written R-operator for ``nn.Sequential`` stacks of ``Linear``
  and element-wise activations (Sigmoid, Tanh, ReLU, Identity).  The forward pass
  (activations ``a_l``, output Hessian factors) is cached per chunk, so each product
  in a CG run costs only the R-forward ``R z_l = W_l R a_{l-1} + V_l a_{l-1} + v_{b,l}``,
  ``R a_l = s'_l * R z_l`` and one backward pass; the derivatives ``s'_l`` are not
  stored but recomputed from the activation in the same element-wise kernel
  (``a (1 - a)`` sigmoid, ``1 - a^2`` tanh, ``[a > 0]`` ReLU); also block-diagonal
  products of all blocks in one batched pass;
* ``func``: ``torch.func.jvp`` + ``torch.func.vjp`` over ``functional_call`` (any model);
* ``double_backward``: the double-backward R-operator trick ``J v = d/du [(J^T u) . v]``
  through autograd (any model; the usual reference).

Products are sums over data chunks (so data larger than GPU memory is fine), summed
over workers by a :class:`~asr_hf.optim.base.Reducer` and divided by the global count.
Vectors are flat (``(P,)``) or tuples of per-parameter tensors (returned in kind).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from asr_hf.optim.base import ExampleSource, LocalReducer, LossKind, Reducer
from asr_hf.optim.solvers import LinearOperator

if TYPE_CHECKING:
    from asr_hf.optim.block import BlockLayout

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
Chunks = Iterable[tuple[Tensor, Tensor]]
"""A re-iterable collection of ``(inputs, targets)`` chunks (a list, or :class:`SourceChunks`)."""

BACKENDS = ("auto", "sequential", "func", "double_backward")


# ----------------------------------------------------------------------------- layout


class ParamLayout:
    """Flat-vector view of a list of named parameters (order = ``model.named_parameters()``).

    Flat vectors have shape ``(P,)`` with ``P = sum(p.numel())``; parameter ``i``
    occupies ``flat[offsets[i] : offsets[i] + numels[i]]``.
    """

    def __init__(self, named_params: Sequence[tuple[str, nn.Parameter]]) -> None:
        if not named_params:
            raise ValueError("no trainable parameters")
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.offsets = [0]
        for k in self.numels[:-1]:
            self.offsets.append(self.offsets[-1] + k)
        self.numel = sum(self.numels)
        self.index = {id(p): i for i, p in enumerate(self.params)}

    @classmethod
    def from_module(cls, model: nn.Module) -> "ParamLayout":
        return cls([(n, p) for n, p in model.named_parameters() if p.requires_grad])

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        """Per-parameter tensors (shapes ``self.shapes``) -> flat ``(P,)``."""
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, flat: Tensor) -> list[Tensor]:
        """Flat ``(P,)`` -> per-parameter views."""
        return [flat[o : o + k].view(s) for o, k, s in zip(self.offsets, self.numels, self.shapes)]

    def flatten_batched(self, tensors: Sequence[Tensor]) -> Tensor:
        """Per-parameter ``(k, *shape)`` -> ``(P, k)``."""
        k = tensors[0].shape[0]
        return torch.cat([t.reshape(k, -1) for t in tensors], dim=1).T

    def unflatten_batched(self, mat: Tensor) -> list[Tensor]:
        """``(P, k)`` -> per-parameter ``(k, *shape)`` tensors."""
        rows = mat.T
        k = rows.shape[0]
        return [rows[:, o : o + n].reshape(k, *s) for o, n, s in zip(self.offsets, self.numels, self.shapes)]

    def get_flat(self) -> Tensor:
        """A flat copy of the current parameter values."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def set_flat_(self, flat: Tensor) -> None:
        """Copy ``flat`` into the parameters in place."""
        for p, v in zip(self.params, self.unflatten(flat)):
            p.copy_(v)


# ----------------------------------------------------------------------------- data


class SourceChunks:
    """Re-iterable chunks of ``source`` restricted to ``indices`` (for operators that
    stream the data on every product instead of caching it)."""

    def __init__(self, source: ExampleSource, indices: Tensor, chunk_size: int) -> None:
        self.source = source
        self.indices = indices
        self.chunk_size = chunk_size

    def __len__(self) -> int:
        return self.indices.numel()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.source.batches(self.indices, self.chunk_size))


# ----------------------------------------------------------------------------- device settings

CPU_CHUNK_SIZE = 4096
"""Examples per chunk off CUDA (and the floor on CUDA)."""

MAX_CHUNK_SIZE = 65536
"""Largest automatic chunk: beyond it a chunk's matrix products are long past saturating
a GPU and the only effect would be a larger working set."""


def auto_chunk_size(
    model: nn.Module,
    device: torch.device | str,
    *,
    free_bytes: Optional[int] = None,
    memory_fraction: float = 0.25,
) -> int:
    """Examples per forward/backward chunk for gradients, products and losses.

    Off CUDA: :data:`CPU_CHUNK_SIZE`.  On CUDA: the largest power of two in
    ``[CPU_CHUNK_SIZE, MAX_CHUNK_SIZE]`` whose working set fits in ``memory_fraction`` of
    the free device memory (``torch.cuda.mem_get_info`` unless ``free_bytes`` is given).
    The working set of one example is estimated as ``4 * sum_l (d_in,l + d_out,l)``
    elements over the model's weight matrices: the chunk's forward cache (every layer's
    input and the output Hessian factor) plus the R-forward / backward temporaries and
    the derivative a product computes per layer.  (The curvature sample's forward cache,
    kept across CG products, is separate: ``N_curv / chunk`` chunk caches.)

    Args:
        model: the network (its 2-D parameters' shapes and dtype are read).
        device: where the products run.
        free_bytes: free device memory (tests; default: queried).
        memory_fraction: share of the free memory one chunk may use.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_CHUNK_SIZE
    params = [p for p in model.parameters() if p.requires_grad]
    width = sum(int(p.shape[0]) + int(p.shape[1]) for p in params if p.dim() == 2)
    if width == 0:
        return CPU_CHUNK_SIZE
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    per_example = 4 * width * params[0].element_size()
    fit = int(memory_fraction * free_bytes) // per_example
    chunk = CPU_CHUNK_SIZE
    while chunk * 2 <= min(fit, MAX_CHUNK_SIZE):
        chunk *= 2
    logger.info("chunk size %d (%.1f GB free on %s, ~%d bytes per example)", chunk, free_bytes / 1e9, device, per_example)
    return chunk


@contextlib.contextmanager
def tf32_matmuls(enabled: bool, device: torch.device | str) -> Iterator[None]:
    """Inside the block, CUDA float32 matrix products run in TF32 (``enabled``: tensor
    cores, operands rounded to a 10-bit mantissa, float32 accumulation) or in full IEEE
    float32 (not ``enabled``); the previous setting is restored afterwards.  A no-op off
    CUDA.  Element-wise ops, reductions and level-1 BLAS (``torch.dot``: CG's inner
    products) are never TF32.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    try:
        old = matmul.fp32_precision
        matmul.fp32_precision = "tf32" if enabled else "ieee"
        restore = lambda: setattr(matmul, "fp32_precision", old)  # noqa: E731
    except (AttributeError, RuntimeError):  # older torch, or the legacy API in use
        old_flag = matmul.allow_tf32
        matmul.allow_tf32 = bool(enabled)
        restore = lambda: setattr(matmul, "allow_tf32", old_flag)  # noqa: E731
    try:
        yield
    finally:
        restore()


# ----------------------------------------------------------------------------- losses


def loss_sum(z: Tensor, t: Tensor, kind: LossKind) -> Tensor:
    """``sum_n l(z_n, t_n)`` for outputs ``z`` ``(N, C)`` (a scalar)."""
    if kind == LossKind.CROSS_ENTROPY:
        return F.cross_entropy(z, t, reduction="sum")
    if kind == LossKind.MSE:
        return 0.5 * (z - t).pow(2).sum()
    if kind == LossKind.BCE:
        return F.binary_cross_entropy_with_logits(z, t.to(z.dtype), reduction="sum")
    raise ValueError(f"unknown loss kind {kind!r}")


def loss_output_grad(z: Tensor, t: Tensor, kind: LossKind) -> Tensor:
    """``dl(z_n, t_n)/dz_n`` for every example, shape ``(N, C)``."""
    if kind == LossKind.CROSS_ENTROPY:
        g = torch.softmax(z, dim=-1)
        g[torch.arange(z.shape[0], device=z.device), t] -= 1.0
        return g
    if kind == LossKind.MSE:
        return z - t
    if kind == LossKind.BCE:
        return torch.sigmoid(z) - t.to(z.dtype)
    raise ValueError(f"unknown loss kind {kind!r}")


def output_hessian_factor(z: Tensor, kind: LossKind) -> Optional[Tensor]:
    """What :func:`apply_output_hessian` needs: ``p = softmax(z)`` (CE), ``s (1 - s)``
    (BCE) or nothing (MSE), shape ``(N, C)``."""
    z = z.detach()
    if kind == LossKind.CROSS_ENTROPY:
        return torch.softmax(z, dim=-1)
    if kind == LossKind.BCE:
        s = torch.sigmoid(z)
        return s * (1.0 - s)
    if kind == LossKind.MSE:
        return None
    raise ValueError(f"unknown loss kind {kind!r}")


def apply_output_hessian(kind: LossKind, factor: Optional[Tensor], u: Tensor) -> Tensor:
    """``H_n u_n`` for every example without forming ``H_n``.

    Args:
        kind: the loss.
        factor: from :func:`output_hessian_factor`, ``(N, C)``.
        u: ``(..., N, C)`` (leading batch dimensions broadcast against ``factor``).
    """
    if kind == LossKind.CROSS_ENTROPY:
        pu = factor * u
        return pu - factor * pu.sum(dim=-1, keepdim=True)
    if kind == LossKind.BCE:
        return factor * u
    return u


# ----------------------------------------------------------------------------- sequential fast path

_ACTIVATIONS = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu"}


def _apply_act(act: str, a: Tensor) -> Tensor:
    if act == "sigmoid":
        return torch.sigmoid(a)
    if act == "tanh":
        return torch.tanh(a)
    return torch.relu(a)


def _act_backward(act: str, r: Tensor, a: Tensor) -> Tensor:
    """``r * s'(z)`` from the activation's *output* ``a = s(z)``, one fused kernel:
    sigmoid ``r a (1 - a)``, tanh ``r (1 - a^2)``, ReLU ``r [a > 0]`` (``a > 0`` iff
    ``z > 0``).  ``r`` ``(..., N, d)`` broadcasts against ``a`` ``(N, d)``."""
    if act == "sigmoid":
        return torch.ops.aten.sigmoid_backward(r, a)
    if act == "tanh":
        return torch.ops.aten.tanh_backward(r, a)
    return torch.ops.aten.threshold_backward(r, a, 0)


@dataclass
class _Op:
    linear: Optional[nn.Linear]  # a Linear layer, or None for an activation
    act: str = ""
    w: int = -1  # layout index of the weight
    b: int = -1  # layout index of the bias (-1: no bias)


class SequentialNet:
    """An ``nn.Sequential`` of ``Linear`` and element-wise activations, with hand-written
    forward, R-forward (``J v``) and backward (``J^T u``) passes.

    The forward cache of a chunk is a list with, per op, the layer input ``a_{l-1}``
    (``(N, d_in)``) for a Linear and the activation's output ``a_l = s(z_l)``
    (``(N, d)``) for an activation.  The two are the same tensor when an activation
    feeds a Linear, so the cache holds each activation once (plus the network input);
    the derivative ``s'(z_l)`` is recomputed from ``a_l`` where it is applied
    (:func:`_act_backward`), which costs no extra pass over memory.
    """

    def __init__(self, ops: list[_Op]) -> None:
        self.ops = ops
        self.linear_pos = [i for i, op in enumerate(ops) if op.linear is not None]

    @classmethod
    def parse(cls, model: nn.Module, layout: ParamLayout) -> Optional["SequentialNet"]:
        """The fast-path view of ``model``, or ``None`` if it is not such a stack (or has
        parameters outside its Linear layers, frozen Linear parameters, or buffers)."""
        if not isinstance(model, nn.Sequential):
            return None
        if any(True for _ in model.buffers()):
            return None
        flat: list[nn.Module] = []
        stack = list(model)
        while stack:
            m = stack.pop(0)
            if isinstance(m, nn.Sequential):
                stack = list(m) + stack
            else:
                flat.append(m)
        ops: list[_Op] = []
        covered = 0
        for m in flat:
            if isinstance(m, nn.Linear):
                if m.weight.requires_grad is False or (m.bias is not None and not m.bias.requires_grad):
                    return None
                w = layout.index.get(id(m.weight), -1)
                b = layout.index.get(id(m.bias), -1) if m.bias is not None else -1
                if w < 0 or (m.bias is not None and b < 0):
                    return None
                covered += 1 + (m.bias is not None)
                ops.append(_Op(m, w=w, b=b))
            elif isinstance(m, nn.Identity):
                continue
            elif type(m) in _ACTIVATIONS:
                ops.append(_Op(None, act=_ACTIVATIONS[type(m)]))
            else:
                return None
        if covered != len(layout.params) or not any(op.linear is not None for op in ops):
            return None
        return cls(ops)

    # -- passes ---------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``z = f(x)`` and the cache for R-forward / backward passes."""
        cache: list[Tensor] = []
        a = x
        with torch.no_grad():
            for op in self.ops:
                if op.linear is not None:
                    cache.append(a)
                    a = F.linear(a, op.linear.weight, op.linear.bias)
                else:
                    a = _apply_act(op.act, a)
                    cache.append(a)  # the next Linear's input: the same tensor, stored once
        return a, cache

    def rop(self, cache: list[Tensor], tangents: Sequence[Tensor]) -> Tensor:
        """``J v``: the R-forward pass, ``(..., N, C)`` for tangents with leading dims ``...``."""
        r: Optional[Tensor] = None
        with torch.no_grad():
            for op, c in zip(self.ops, cache):
                if op.linear is None:
                    if r is not None:
                        r = _act_backward(op.act, r, c)
                    continue
                vw = tangents[op.w]
                if vw.dim() == 2:
                    t = F.linear(c, vw, tangents[op.b] if op.b >= 0 else None)
                    r = t if r is None else t.addmm_(r, op.linear.weight.T)
                else:  # batched tangents (k, dout, din)
                    t = torch.matmul(c, vw.transpose(-1, -2))
                    if op.b >= 0:
                        t = t + tangents[op.b].unsqueeze(-2)
                    r = t if r is None else t + torch.matmul(r, op.linear.weight.T)
        assert r is not None
        return r

    def backward(
        self, cache: list[Tensor], delta: Tensor, num_params: int, square: bool = False
    ) -> tuple[list[Optional[Tensor]], list[Optional[Tensor]]]:
        """``J^T delta`` per parameter (leading dims of ``delta`` kept) and, if ``square``,
        ``sum_n (J_n^T delta_n)^2`` (per-example squared gradients; ``delta`` 2-D)."""
        grads: list[Optional[Tensor]] = [None] * num_params
        sq: list[Optional[Tensor]] = [None] * num_params
        first = self.linear_pos[0]
        with torch.no_grad():
            for pos in range(len(self.ops) - 1, first - 1, -1):
                op, c = self.ops[pos], cache[pos]
                if op.linear is None:
                    delta = _act_backward(op.act, delta, c)
                    continue
                grads[op.w] = torch.matmul(delta.transpose(-1, -2), c)
                if op.b >= 0:
                    grads[op.b] = delta.sum(dim=-2)
                if square:
                    d2 = delta * delta
                    sq[op.w] = d2.T @ (c * c)
                    if op.b >= 0:
                        sq[op.b] = d2.sum(dim=0)
                if pos > first:
                    delta = torch.matmul(delta, op.linear.weight)
        return grads, sq

    def block_products(
        self,
        cache: list[Tensor],
        tangents: Sequence[Tensor],
        block_of_param: Sequence[int],
        num_blocks: int,
        kind: LossKind,
        factor: Optional[Tensor],
    ) -> list[Tensor]:
        """``sum_n J_{n,b}^T H_n J_{n,b} v_b`` for every block ``b`` in one batched pass.

        Block ``b``'s tangent enters at its first Linear layer ``s_b``; the R-forward
        carries a stack ``(k, N, d)`` of the ``k`` blocks that have entered so far and
        the backward pass drops block ``b`` below ``s_b``.  Cost: one matrix product per
        (block, layer above the block's first layer) in each direction, instead of
        ``B`` full forward+backward passes.

        Returns:
            per-parameter products (the parameter's own block's product).
        """
        # Blocks ordered by the linear op where they enter.
        start = {}
        for li, pos in enumerate(self.linear_pos):
            op = self.ops[pos]
            for p in (op.w, op.b):
                if p >= 0:
                    start.setdefault(block_of_param[p], li)
        order = sorted(start, key=lambda blk: start[blk])
        slot = {blk: s for s, blk in enumerate(order)}
        entered_upto = [sum(1 for blk in order if start[blk] <= li) for li in range(len(self.linear_pos))]
        out: list[Optional[Tensor]] = [None] * len(tangents)
        with torch.no_grad():
            r: Optional[Tensor] = None
            li = -1
            for op, c in zip(self.ops, cache):
                if op.linear is None:
                    if r is not None:
                        r = _act_backward(op.act, r, c)
                    continue
                li += 1
                k = entered_upto[li]
                new = torch.matmul(r, op.linear.weight.T) if r is not None else None
                k_prev = 0 if new is None else new.shape[0]
                if k > k_prev:
                    extra = c.new_zeros(k - k_prev, c.shape[0], op.linear.out_features)
                    new = extra if new is None else torch.cat([new, extra])
                assert new is not None
                new[slot[block_of_param[op.w]]].addmm_(c, tangents[op.w].T)
                if op.b >= 0:
                    new[slot[block_of_param[op.b]]].add_(tangents[op.b])
                r = new
            assert r is not None
            delta = apply_output_hessian(kind, factor, r)
            for apos in range(len(self.ops) - 1, self.linear_pos[-1], -1):  # trailing activations
                delta = _act_backward(self.ops[apos].act, delta, cache[apos])
            for li in range(len(self.linear_pos) - 1, -1, -1):
                pos = self.linear_pos[li]
                # activations between this linear and the next one up were applied already
                op, c = self.ops[pos], cache[pos]
                out[op.w] = delta[slot[block_of_param[op.w]]].T @ c
                if op.b >= 0:
                    out[op.b] = delta[slot[block_of_param[op.b]]].sum(dim=0)
                k_below = entered_upto[li - 1] if li > 0 else 0
                if k_below == 0:
                    break
                delta = torch.matmul(delta[:k_below], op.linear.weight)
                for apos in range(pos - 1, self.linear_pos[li - 1], -1):
                    delta = _act_backward(self.ops[apos].act, delta, cache[apos])
        return [t if t is not None else torch.zeros_like(v) for t, v in zip(out, tangents)]


# ----------------------------------------------------------------------------- back ends


class _Backend:
    """Per-chunk product machinery.  ``prepare`` builds a chunk state (possibly caching
    the forward pass); the products return per-parameter sums over the chunk."""

    def __init__(self, model: nn.Module, layout: ParamLayout, kind: LossKind) -> None:
        self.model = model
        self.layout = layout
        self.kind = kind

    def prepare(self, x: Tensor, t: Tensor) -> Any:
        raise NotImplementedError

    def product(self, state: Any, v: Sequence[Tensor]) -> Sequence[Tensor]:
        raise NotImplementedError

    def matmat(self, state: Any, v: Sequence[Tensor]) -> Sequence[Tensor]:
        """Products for ``k`` tangents at once: per-parameter ``(k, *shape)``."""
        k = v[0].shape[0]
        cols = [self.product(state, [t[j] for t in v]) for j in range(k)]
        return [torch.stack([c[i] for c in cols]) for i in range(len(v))]

    def block_product(
        self, state: Any, v: Sequence[Tensor], block_of_param: Sequence[int], num_blocks: int
    ) -> Sequence[Tensor]:
        """Block-diagonal product by masking: block ``b``'s tangent is ``v`` restricted to
        ``b``; all ``B`` masked tangents go through :meth:`matmat` together."""
        masked = []
        for i, t in enumerate(v):
            m = t.new_zeros((num_blocks, *t.shape))
            m[block_of_param[i]] = t
            masked.append(m)
        prods = self.matmat(state, masked)
        return [p[block_of_param[i]] for i, p in enumerate(prods)]


class _SequentialGGN(_Backend):
    """The hand-written R-operator; with ``compile`` the single-vector product
    (R-forward, ``H``, backward) goes through ``torch.compile`` (element-wise ops fused
    with their neighbours), falling back to eager for good at the first failure."""

    def __init__(
        self, model: nn.Module, layout: ParamLayout, kind: LossKind, net: SequentialNet, compile: bool = False
    ) -> None:
        super().__init__(model, layout, kind)
        self.net = net
        self._compiled: Optional[Any] = None
        if compile:
            try:
                self._compiled = torch.compile(self._product, dynamic=True)
            except Exception as exc:  # no compiler back end on this machine, say
                logger.warning("torch.compile unavailable for GGN products (%s); running eager", exc)

    @property
    def compiled(self) -> bool:
        """Whether products go through ``torch.compile`` (False after a fallback)."""
        return self._compiled is not None

    def prepare(self, x: Tensor, t: Tensor) -> Any:
        z, cache = self.net.forward(x)
        return cache, output_hessian_factor(z, self.kind)

    def _product(self, state: Any, v: Sequence[Tensor]) -> list[Optional[Tensor]]:
        cache, factor = state
        u = apply_output_hessian(self.kind, factor, self.net.rop(cache, v))
        grads, _ = self.net.backward(cache, u, len(v))
        return grads

    def product(self, state: Any, v: Sequence[Tensor]) -> Sequence[Tensor]:
        if self._compiled is not None:
            try:
                return self._compiled(state, list(v))  # type: ignore[no-any-return]
            except Exception as exc:
                logger.warning("compiled GGN product failed (%s: %s); running eager", type(exc).__name__, exc)
                self._compiled = None
        return self._product(state, v)  # type: ignore[return-value]

    def matmat(self, state: Any, v: Sequence[Tensor]) -> Sequence[Tensor]:
        return self._product(state, v)  # type: ignore[return-value]  # the passes broadcast over a leading dim

    def block_product(
        self, state: Any, v: Sequence[Tensor], block_of_param: Sequence[int], num_blocks: int
    ) -> Sequence[Tensor]:
        cache, factor = state
        return self.net.block_products(cache, v, block_of_param, num_blocks, self.kind, factor)


class _FuncGGN(_Backend):
    """``torch.func.jvp`` for ``J v`` and a cached ``torch.func.vjp`` for ``J^T u``."""

    def __init__(self, model: nn.Module, layout: ParamLayout, kind: LossKind, cache: bool) -> None:
        super().__init__(model, layout, kind)
        self.cache = cache

    def _fn(self, x: Tensor):
        names = self.layout.names
        buffers = dict(self.model.named_buffers())
        model = self.model

        def f(*params: Tensor) -> Tensor:
            return torch.func.functional_call(model, {**dict(zip(names, params)), **buffers}, (x,))

        return f

    def prepare(self, x: Tensor, t: Tensor) -> Any:
        f = self._fn(x)
        params = tuple(p.detach() for p in self.layout.params)
        if self.cache:
            z, vjp_fn = torch.func.vjp(f, *params)
        else:
            with torch.no_grad():
                z = f(*params)
            vjp_fn = None
        return f, params, output_hessian_factor(z, self.kind), vjp_fn

    def product(self, state: Any, v: Sequence[Tensor]) -> Sequence[Tensor]:
        f, params, factor, vjp_fn = state
        _, jv = torch.func.jvp(f, params, tuple(v))
        u = apply_output_hessian(self.kind, factor, jv)
        if vjp_fn is None:
            _, vjp_fn = torch.func.vjp(f, *params)
        return vjp_fn(u)

    def matmat(self, state: Any, v: Sequence[Tensor]) -> Sequence[Tensor]:
        f, params, factor, vjp_fn = state
        if vjp_fn is None:
            _, vjp_fn = torch.func.vjp(f, *params)
        jv = torch.func.vmap(lambda *tv: torch.func.jvp(f, params, tv)[1])(*v)
        u = apply_output_hessian(self.kind, factor, jv)
        return torch.func.vmap(vjp_fn)(u)


class _DoubleBackwardGGN(_Backend):
    """The double-backward R-operator trick: ``J v = d/du [(J^T u) . v]`` at ``u = 0``."""

    def __init__(self, model: nn.Module, layout: ParamLayout, kind: LossKind, cache: bool) -> None:
        super().__init__(model, layout, kind)
        self.cache = cache

    def prepare(self, x: Tensor, t: Tensor) -> Any:
        if not self.cache:
            with torch.no_grad():
                return x, output_hessian_factor(self.model(x), self.kind), None
        with torch.enable_grad():
            z = self.model(x)
        return x, output_hessian_factor(z, self.kind), z

    def product(self, state: Any, v: Sequence[Tensor]) -> Sequence[Tensor]:
        x, factor, z = state
        params = self.layout.params
        with torch.enable_grad():
            if z is None:
                z = self.model(x)
            u = torch.zeros_like(z, requires_grad=True)
            g = torch.autograd.grad(z, params, u, create_graph=True)
            jv = torch.autograd.grad(g, u, tuple(v), retain_graph=True)[0]
            hu = apply_output_hessian(self.kind, factor, jv)
            return torch.autograd.grad(z, params, hu, retain_graph=self.cache)


class _Hessian(_Backend):
    """Exact Hessian-vector products by double backward through the gradient."""

    def __init__(self, model: nn.Module, layout: ParamLayout, kind: LossKind, cache: bool) -> None:
        super().__init__(model, layout, kind)
        self.cache = cache

    def _grad_graph(self, x: Tensor, t: Tensor) -> tuple[Tensor, ...]:
        with torch.enable_grad():
            loss = loss_sum(self.model(x), t, self.kind)
            return torch.autograd.grad(loss, self.layout.params, create_graph=True)

    def prepare(self, x: Tensor, t: Tensor) -> Any:
        return x, t, self._grad_graph(x, t) if self.cache else None

    def product(self, state: Any, v: Sequence[Tensor]) -> Sequence[Tensor]:
        x, t, g = state
        if g is None:
            g = self._grad_graph(x, t)
        with torch.enable_grad():
            return torch.autograd.grad(
                g, self.layout.params, tuple(v), retain_graph=self.cache, allow_unused=True, materialize_grads=True
            )


# ----------------------------------------------------------------------------- operators


class CurvatureOperator(LinearOperator):
    """``v -> ((1/N) sum_n C_n + (l2 + damping) I) v`` over the chunks of a data sample.

    Args:
        model: the network; its current parameters are the linearisation point (they
            must not change while the operator is in use).
        loss_kind: output non-linearity + loss.
        chunks: re-iterable ``(inputs (N_c, ...), targets)`` chunks (a list or
            :class:`SourceChunks`); ``N = sum N_c`` summed over workers.
        damping: ``lambda`` (may be changed between products via the attribute).
        l2: curvature of the objective's L2 term.
        reducer: sums products and counts over workers.
        cache: keep per-chunk forward state between products (one forward pass per
            operator instead of one per product; memory ~ activations of the sample).
        blocks: if given, the block-diagonal part ``sum_b P_b C P_b`` only.
    """

    def __init__(
        self,
        backend: _Backend,
        chunks: Chunks,
        *,
        damping: float = 0.0,
        l2: float = 0.0,
        reducer: Optional[Reducer] = None,
        cache: bool = True,
        blocks: Optional["BlockLayout"] = None,
    ) -> None:
        self.backend = backend
        self.layout = backend.layout
        self.chunks = chunks
        self.damping = damping
        self.l2 = l2
        self.reducer = reducer or LocalReducer()
        self.cache = cache
        self.blocks = blocks
        self._states: Optional[list[Any]] = None
        self._count: Optional[float] = None
        self.num_products = 0  # matrix-vector products performed (columns of matmat included)
        self.examples_processed = 0  # local examples touched by products

    @property
    def numel(self) -> int:
        return self.layout.numel

    @property
    def count(self) -> float:
        """``N``, the (global) number of examples the products average over."""
        if self._count is None:
            local = 0
            for x, _ in self.chunks:
                local += x.shape[0]
            self._count = self._reduce_count(local)
        return self._count

    def _reduce_count(self, local: int) -> float:
        c = torch.tensor([float(local)], dtype=torch.float64, device=self.layout.device)
        return float(self.reducer.all_reduce_(c)[0])

    def _iter_states(self) -> Iterator[tuple[Any, int]]:
        if self._states is not None:
            yield from self._states
            return
        states: list[tuple[Any, int]] = []
        local = 0
        for x, t in self.chunks:
            st = (self.backend.prepare(x, t), x.shape[0])
            local += x.shape[0]
            if self.cache:
                states.append(st)
            yield st
        if self.cache:
            self._states = states
        if self._count is None:
            self._count = self._reduce_count(local)

    def _to_list(self, v: Tensor | Sequence[Tensor]) -> tuple[list[Tensor], bool]:
        if isinstance(v, Tensor):
            return self.layout.unflatten(v), True
        return list(v), False

    def _accumulate(self, fn, batched: bool, batch_cols: int = 0) -> Tensor:
        acc: Optional[Tensor] = None
        n_local = 0
        for state, n in self._iter_states():
            part = fn(state)
            flat = self.layout.flatten_batched(part) if batched else self.layout.flatten(part)
            acc = flat if acc is None else acc.add_(flat)
            n_local += n
        if acc is None:  # this worker's shard holds none of the sample: contribute zeros
            acc = torch.zeros(
                (self.layout.numel, batch_cols) if batched else (self.layout.numel,),
                dtype=self.layout.dtype, device=self.layout.device,
            )  # fmt: skip
        self.examples_processed += n_local
        return self.reducer.all_reduce_(acc).div_(self.count)

    def matvec(self, v: Tensor | Sequence[Tensor]) -> Tensor | tuple[Tensor, ...]:  # type: ignore[override]
        """``(C + (l2 + damping) I) v``; ``v`` flat ``(P,)`` or per-parameter tensors."""
        vs, flat = self._to_list(v)
        vflat = v if flat else self.layout.flatten(vs)
        if self.blocks is None:
            out = self._accumulate(lambda st: self.backend.product(st, vs), batched=False)
        else:
            bop, nb = self.blocks.block_of_param, self.blocks.num_blocks
            out = self._accumulate(lambda st: self.backend.block_product(st, vs, bop, nb), batched=False)
        self.num_products += 1
        shift = self.l2 + self.damping
        if shift:
            out.add_(vflat, alpha=shift)  # type: ignore[arg-type]
        return out if flat else tuple(self.layout.unflatten(out))

    def matmat(self, v: Tensor) -> Tensor:
        """``(C + (l2 + damping) I) V`` for ``V`` of shape ``(P, k)``."""
        if self.blocks is not None:
            return super().matmat(v)
        vs = self.layout.unflatten_batched(v)
        out = self._accumulate(lambda st: self.backend.matmat(st, vs), batched=True, batch_cols=v.shape[1])
        self.num_products += v.shape[1]
        shift = self.l2 + self.damping
        if shift:
            out.add_(v, alpha=shift)
        return out

    def to_dense(self, dtype: Optional[torch.dtype] = None, device: Optional[torch.device] = None) -> Tensor:
        eye = torch.eye(self.numel, dtype=dtype or self.layout.dtype, device=device or self.layout.device)
        return self.matmat(eye)

    def cache_nbytes(self) -> int:
        """Bytes of the tensors the cached per-chunk states hold (each storage counted
        once; 0 before the first product or with ``cache=False``).  Tensors a back end
        keeps inside closures (``func``'s vjp, autograd graphs) are not visible here."""
        seen: dict[int, int] = {}

        def walk(obj: Any) -> None:
            if isinstance(obj, Tensor):
                st = obj.untyped_storage()
                seen[st.data_ptr()] = st.nbytes()
            elif isinstance(obj, (list, tuple)):
                for o in obj:
                    walk(o)

        walk([st for st, _ in self._states or []])
        return sum(seen.values())


def resolve_backend(model: nn.Module, layout: ParamLayout, backend: str) -> tuple[str, Optional[SequentialNet]]:
    """The back end ``auto`` picks for ``model`` (and its :class:`SequentialNet` view, if any).

    Raises:
        ValueError: unknown name, or ``sequential`` for a model it cannot handle.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown curvature backend {backend!r}; known: {BACKENDS}")
    net = SequentialNet.parse(model, layout) if backend in ("auto", "sequential") else None
    if backend == "sequential" and net is None:
        raise ValueError("the 'sequential' backend needs an nn.Sequential of Linear + Sigmoid/Tanh/ReLU layers")
    if backend == "auto":
        backend = "sequential" if net is not None else "func"
    return backend, net


class GGNOperator(CurvatureOperator):
    """Generalized Gauss-Newton ``G v = (1/N) sum_n J_n^T H_n J_n v + (l2 + damping) v``.

    Args:
        model: the network ``z = f(theta; x)``.
        loss_kind: fixes ``H_n`` (analytic, see the module docstring).
        chunks: the curvature sample as re-iterable ``(inputs, targets)`` chunks.
        backend: ``auto`` (``sequential`` when the model allows it, else ``func``),
            ``sequential``, ``func`` or ``double_backward``.
        layout: parameter layout (default: all trainable parameters of ``model``).
        compile: ``torch.compile`` the single-vector product (``sequential`` back end
            only; off by default; a compilation failure falls back to eager).
        **kwargs: see :class:`CurvatureOperator`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_kind: LossKind,
        chunks: Chunks,
        *,
        backend: str = "auto",
        layout: Optional[ParamLayout] = None,
        **kwargs: Any,
    ) -> None:
        layout = layout or ParamLayout.from_module(model)
        kind = LossKind(loss_kind)
        name, net = resolve_backend(model, layout, backend)
        cache = kwargs.get("cache", True)
        compile = bool(kwargs.pop("compile", False))
        if compile and name != "sequential":
            raise ValueError(f"compile=True needs the 'sequential' back end, not {name!r}")
        impl: _Backend
        if name == "sequential":
            assert net is not None
            impl = _SequentialGGN(model, layout, kind, net, compile=compile)
        elif name == "func":
            impl = _FuncGGN(model, layout, kind, cache)
        else:
            impl = _DoubleBackwardGGN(model, layout, kind, cache)
        self.backend_name = name
        super().__init__(impl, chunks, **kwargs)


class HessianOperator(CurvatureOperator):
    """Exact Hessian of the mean loss, ``H v + (l2 + damping) v`` (double backward;
    indefinite in general, so CG may meet negative curvature)."""

    def __init__(
        self,
        model: nn.Module,
        loss_kind: LossKind,
        chunks: Chunks,
        *,
        layout: Optional[ParamLayout] = None,
        **kwargs: Any,
    ) -> None:
        layout = layout or ParamLayout.from_module(model)
        impl = _Hessian(model, layout, LossKind(loss_kind), kwargs.get("cache", True))
        self.backend_name = "hessian"
        super().__init__(impl, chunks, **kwargs)


# ----------------------------------------------------------------------------- gradients and losses


@dataclass
class GradientResult:
    """Mean loss and gradient over a sample.

    Attributes:
        loss: ``(1/N) sum_n l_n`` (without any L2 term).
        count: ``N`` (global).
        grad: ``(1/N) sum_n grad l_n``, flat ``(P,)``.
        sq_grad: ``(1/N) sum_n (grad l_n)^2`` (diagonal of the empirical Fisher), or
            ``None`` if not requested.
    """

    loss: float
    count: float
    grad: Tensor
    sq_grad: Optional[Tensor]


def loss_and_gradient(
    model: nn.Module,
    loss_kind: LossKind,
    chunks: Chunks,
    *,
    layout: Optional[ParamLayout] = None,
    reducer: Optional[Reducer] = None,
    square: bool = False,
    backend: str = "auto",
    per_example_chunk: int = 256,
) -> GradientResult:
    """Mean loss, gradient and (optionally) the empirical-Fisher diagonal over ``chunks``.

    Per-example squared gradients use the sequential fast path's identity
    ``sum_n (delta_n a_n^T)^2 = (delta^2)^T (a^2)`` when available, else
    ``torch.func.vmap(torch.func.grad(...))`` over ``per_example_chunk`` examples at a time.
    """
    layout = layout or ParamLayout.from_module(model)
    reducer = reducer or LocalReducer()
    kind = LossKind(loss_kind)
    _, net = resolve_backend(model, layout, backend)
    grad = torch.zeros(layout.numel, dtype=layout.dtype, device=layout.device)
    sq = torch.zeros_like(grad) if square else None
    total = torch.zeros(2, dtype=torch.float64, device=layout.device)  # loss sum, count
    for x, t in chunks:
        if net is not None:
            z, cache = net.forward(x)
            total[0] += loss_sum(z, t, kind).double()
            g, s = net.backward(cache, loss_output_grad(z, t, kind), len(layout.params), square=square)
            grad += layout.flatten(g)  # type: ignore[arg-type]
            if sq is not None:
                sq += layout.flatten(s)  # type: ignore[arg-type]
        else:
            with torch.enable_grad():
                loss = loss_sum(model(x), t, kind)
                g = torch.autograd.grad(loss, layout.params, allow_unused=True, materialize_grads=True)
            total[0] += loss.detach().double()
            grad += layout.flatten(g)
            if sq is not None:
                sq += _per_example_sq_grad(model, layout, kind, x, t, per_example_chunk)
        total[1] += x.shape[0]
    reducer.all_reduce_(grad)
    reducer.all_reduce_(total)
    if sq is not None:
        reducer.all_reduce_(sq)
    loss_total, count = total.tolist()
    grad /= count
    if sq is not None:
        sq /= count
    return GradientResult(loss_total / count, count, grad, sq)


def _per_example_sq_grad(
    model: nn.Module, layout: ParamLayout, kind: LossKind, x: Tensor, t: Tensor, chunk: int
) -> Tensor:
    names = layout.names
    buffers = dict(model.named_buffers())
    params = tuple(p.detach() for p in layout.params)

    def one(p: tuple[Tensor, ...], xi: Tensor, ti: Tensor) -> Tensor:
        z = torch.func.functional_call(model, {**dict(zip(names, p)), **buffers}, (xi.unsqueeze(0),))
        return loss_sum(z, ti.unsqueeze(0), kind)

    per_ex = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))
    out = torch.zeros(layout.numel, dtype=layout.dtype, device=layout.device)
    for s in range(0, x.shape[0], chunk):
        g = per_ex(params, x[s : s + chunk], t[s : s + chunk])
        out += torch.cat([gi.pow(2).sum(0).reshape(-1) for gi in g])
    return out


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    loss_kind: LossKind,
    chunks: Chunks,
    *,
    reducer: Optional[Reducer] = None,
    full_precision: bool = True,
) -> tuple[float, float]:
    """``(sum_n l_n, N)`` over ``chunks`` at the model's current parameters (global sums).

    With ``full_precision`` the forward passes run in IEEE float32 even inside a TF32
    block (:func:`tf32_matmuls`): HF compares held-out losses of nearby parameters
    (backtracking, the reduction ratio, the line search), differences TF32's ~1e-3
    relative operand rounding would swamp.  Per-chunk sums accumulate in float64.
    """
    reducer = reducer or LocalReducer()
    kind = LossKind(loss_kind)
    device = next(model.parameters()).device
    loss = torch.zeros((), dtype=torch.float64, device=device)
    count = 0  # on the host: no per-chunk transfer
    precision = tf32_matmuls(False, device) if full_precision else contextlib.nullcontext()
    with precision:
        for x, t in chunks:
            loss += loss_sum(model(x), t, kind).double()
            count += x.shape[0]
    # a worker whose shard holds none of the indices contributes zeros
    total = torch.stack([loss, torch.tensor(float(count), dtype=torch.float64, device=device)])
    s, n = reducer.all_reduce_(total).tolist()
    if n == 0:
        raise ValueError("no data chunks")
    return s, n
