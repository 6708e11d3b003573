"""The Kronecker-factored inverse curvature of KFAC / K-BFGS as a linear operator on flat
parameter vectors, so it can precondition any solver (e.g. HF's CG) or be compared with
dense matrices.

Per tracked layer ``h = W a + b`` (notation of :mod:`asr_hf.optim.kron`) the curvature
block is ``A (x) G`` and its inverse acts on the gradient-shaped matrix
``V = [V_W, v_b]`` (``(d_out, d_a)``) as

``(A (x) G)^{-1} vec(V) = vec(H_G V H_A)``  (``vec`` stacking columns).

:class:`KroneckerInverse` applies that to the layer's slice of a flat vector ``(P,)``
(:class:`~asr_hf.optim.layout.ParamLayout`: ``V_W`` row-major, then ``v_b``) and the
identity to every parameter outside the tracked layers, the same ``P`` the optimizers'
own steps use (:meth:`~asr_hf.optim.kron.KroneckerOptimizer.precondition`).  With SPD
``H_G`` and ``H_A`` (damped inverses, BFGS updates that keep positive definiteness) the
operator is SPD, as preconditioned CG requires.
"""

from __future__ import annotations

from typing import Optional

import torch

from asr_hf.optim.kron import KronLayer, KroneckerOptimizer
from asr_hf.optim.layout import ParamLayout
from asr_hf.optim.precond import Preconditioner

Tensor = torch.Tensor


class KroneckerInverse(Preconditioner):
    """``v -> P v`` with ``P = blockdiag_l (A_l (x) G_l)^{-1}`` (identity elsewhere).

    The factors are read from ``optimizer`` at every product, so the operator follows the
    optimizer's state; it must not step while a solve uses the operator (``fixed``).

    Args:
        optimizer: a KFAC / K-BFGS / K-BFGS(L) optimizer (its layers and factors).
        layout: the flat vectors' layout (default: all trainable parameters of the
            optimizer's model); it may cover a sub-module (e.g. the bare network of a
            model with a fixed input normalisation): parameters are matched by identity.
        untracked_scale: ``P`` on parameters outside the tracked layers (``1``: the
            identity, the optimizers' plain step).

    Raises:
        ValueError: if a tracked layer has a weight in ``layout`` but not its bias.
    """

    def __init__(
        self, optimizer: KroneckerOptimizer, layout: Optional[ParamLayout] = None, untracked_scale: float = 1.0
    ) -> None:
        self.optimizer = optimizer
        self.layout = layout or ParamLayout.from_module(optimizer.model)
        super().__init__(self.layout.numel)
        self.untracked_scale = float(untracked_scale)
        self.layers: list[tuple[KronLayer, int, int]] = []  # (layer, weight index, bias index or -1)
        for layer in optimizer.layers:
            w = self.layout.index.get(id(layer.weight), -1)
            if w < 0:
                continue
            b = -1
            if layer.bias is not None:
                b = self.layout.index.get(id(layer.bias), -1)
                if b < 0:
                    raise ValueError(f"layer {layer.name}: weight in the layout but not its bias")
            self.layers.append((layer, w, b))

    @torch.no_grad()
    def matvec(self, v: Tensor) -> Tensor:
        """``P v`` for ``v`` of shape ``(P,)``."""
        parts = self.layout.unflatten(v)
        out = [p * self.untracked_scale if self.untracked_scale != 1.0 else p.clone() for p in parts]
        for layer, w, b in self.layers:
            mat = parts[w] if b < 0 else torch.cat([parts[w], parts[b].unsqueeze(1)], dim=1)  # (d_out, d_a)
            pm = self.optimizer.precondition(layer, mat.to(layer.weight.dtype)).to(v.dtype)
            out[w] = pm[:, : layer.d_in]
            if b >= 0:
                out[b] = pm[:, layer.d_in]
        return self.layout.flatten(out)


__all__ = ["KroneckerInverse"]
