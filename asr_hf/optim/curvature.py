"""Curvature matrices of a network + loss as matrix-free linear operators.

(About 620 lines: the operator and its four product back ends share one per-chunk contract.)

For a model ``z_n = f(theta; x_n)`` (outputs ``z_n in R^C``) and a per-example loss
``l(z_n, t_n)`` the objective is the mean ``L(theta) = (1/N) sum_n l(f(theta; x_n), t_n)``.
With ``J_n = dz_n / dtheta`` (``C x P``) and ``H_n = d^2 l / dz_n^2`` (``C x C``):

* generalized Gauss-Newton ``G v = (1/N) sum_n J_n^T H_n J_n v`` (PSD whenever the loss
  is convex in ``z``), :class:`GGNOperator`;
* Hessian ``H v = d/dtheta (grad L . v)``, :class:`HessianOperator`.

Every operator returns ``(C + (l2 + damping) I) v``: ``l2`` is the curvature of an L2
term ``0.5 l2 |theta|^2`` in the objective and ``damping`` the Levenberg-Marquardt
``lambda``.  ``H_n`` is applied analytically, never formed
(:func:`asr_hf.optim.losses.apply_output_hessian`).

``J v`` is forward mode and ``J^T u`` reverse mode.  Three back ends compute them:

* ``sequential``: the hand-written R-operator of :mod:`asr_hf.optim.sequential` for
  ``nn.Sequential`` stacks of ``Linear`` and element-wise activations.  The forward pass
  (activations ``a_l``, output Hessian factors) is cached per chunk, so each product
  in a CG run costs only one R-forward and one backward pass; also block-diagonal
  products of all blocks in one batched pass;
* ``func``: ``torch.func.jvp`` + ``torch.func.vjp`` over ``functional_call`` (any model);
* ``double_backward``: the double-backward R-operator trick ``J v = d/du [(J^T u) . v]``
  through autograd (any model; the usual reference).

Products are sums over data chunks (so data larger than GPU memory is fine), summed
over workers by a :class:`~asr_hf.optim.base.Reducer` and divided by the global count.
Vectors are flat (``(P,)``, :class:`~asr_hf.optim.layout.ParamLayout`) or tuples of
per-parameter tensors (returned in kind).  Also here: the mean loss and gradient
(:func:`loss_and_gradient`) and the summed loss (:func:`evaluate_loss`) over chunks.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Sequence

import torch
from torch import nn

from asr_hf.optim.base import ExampleSource, LocalReducer, LossKind, Reducer
from asr_hf.optim.device import tf32_matmuls
from asr_hf.optim.layout import BlockLayout, ParamLayout
from asr_hf.optim.losses import apply_output_hessian, loss_output_grad, loss_sum, output_hessian_factor
from asr_hf.optim.sequential import SequentialNet
from asr_hf.optim.solvers import LinearOperator

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
Chunks = Iterable[tuple[Tensor, Tensor]]
"""A re-iterable collection of ``(inputs, targets)`` chunks (a list, or :class:`SourceChunks`)."""

BACKENDS = ("auto", "sequential", "func", "double_backward")


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
        blocks: Optional[BlockLayout] = None,
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
