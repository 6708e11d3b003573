"""The hand-written R-operator fast path for ``nn.Sequential`` stacks of ``Linear`` and
element-wise activations (Sigmoid, Tanh, ReLU, Identity).

With layer inputs ``a_{l-1}``, pre-activations ``z_l = W_l a_{l-1} + b_l`` and activations
``a_l = s_l(z_l)``:

* forward: ``z = f(x)`` and a per-chunk cache (:meth:`SequentialNet.forward`);
* R-forward, ``J v``: ``R z_l = W_l R a_{l-1} + V_l a_{l-1} + v_{b,l}``,
  ``R a_l = s'_l * R z_l`` (:meth:`SequentialNet.rop`);
* backward, ``J^T u`` (and per-example squared gradients ``(delta^2)^T (a^2)``)
  (:meth:`SequentialNet.backward`);
* block-diagonal products of all blocks in one batched pass
  (:meth:`SequentialNet.block_products`).

The derivatives ``s'_l`` are not stored but recomputed from the activation in the same
element-wise kernel (``a (1 - a)`` sigmoid, ``1 - a^2`` tanh, ``[a > 0]`` ReLU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from asr_hf.optim.base import LossKind
from asr_hf.optim.layout import ParamLayout
from asr_hf.optim.losses import apply_output_hessian

Tensor = torch.Tensor


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
