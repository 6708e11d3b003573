"""A Kronecker-factored (KFAC) preconditioner for Hessian-free CG, rebuilt on every
HF iteration's curvature sample.

HF solves ``(C + mu I) p = -g`` with ``C`` the GGN of the curvature sample ``S_c`` and
``mu = lambda + l2``.  Per tracked :class:`torch.nn.Linear` layer (notation of
:mod:`asr_hf.optim.kron`) the GGN block is approximated by ``A (x) G`` (Martens & Grosse
2015), both factors measured on ``S_c`` at the current parameters:

* ``A = mean_n abar_n abar_n^T`` (layer inputs with a 1 appended for the bias);
* ``G = mean_n g_n g_n^T`` with ``g_n = d l(z_n, t~_n) / d h_n`` at targets ``t~_n`` drawn
  from the model's predictive distribution (:func:`~asr_hf.optim.losses.sample_targets`):
  for the loss pairs of :class:`~asr_hf.optim.base.LossKind` the sampled (true) Fisher is
  the GGN, so ``E[A (x) G]`` matches the GGN's layer block up to the Kronecker
  factorisation.

The damping enters as factored Tikhonov with the trace-norm split ``pi`` of Martens &
Grosse (6.3): ``M = blockdiag_l (A_l + pi_l sqrt(mu) I) (x) (G_l + sqrt(mu)/pi_l I)``,
and ``M^{-1} v`` is ``H_G V H_A`` per layer on the gradient-shaped slice ``V = [V_W, v_b]``.
``M`` is SPD and fixed during the solve, so plain PCG keeps its guarantees.

Why this one: in float64 on the systems a real HF run solves (``bench/bench_precond.py``),
neither Martens' diagonal, the exact GGN diagonal nor L-BFGS pairs from earlier solves
reduce the iterations CG needs to reach a given fraction of the optimal model reduction
``phi*``; the Kronecker factors, which carry each layer's within-layer correlations, do.

Cost per HF iteration: one forward and one backward pass over ``S_c`` (the sampled
targets' gradients), ``O(d^3)`` inverses of the factors, and two matrix products per layer
per CG iteration (``O(d_out d_a (d_out + d_a))``, small next to a GGN product over
``S_c``).  Every trainable parameter must belong to a tracked layer (the bare
``nn.Sequential`` networks of :mod:`asr_hf.nnet.model` do); anything else is refused.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import nn

from asr_hf.optim.base import LocalReducer, LossKind, Reducer
from asr_hf.optim.kron import CaptureSpec, KronCapture, KronLayer, find_layers
from asr_hf.optim.kron_factors import damped_inverse, pi_split
from asr_hf.optim.layout import ParamLayout
from asr_hf.optim.precond import Preconditioner

Tensor = torch.Tensor

_SPEC = CaptureSpec(input_cov=True, sampled_grad_cov=True)


class KFACPreconditioner(Preconditioner):
    """``z = M^{-1} r`` with ``M`` the damped Kronecker-factored GGN of the curvature sample.

    Call :meth:`update` before each solve (it measures the factors at the current
    parameters and inverts them for the solve's damping); :meth:`matvec` then applies the
    fixed ``M^{-1}``.

    Args:
        model: the network the GGN is of (its output is the loss input, e.g. logits).
        layout: the flat vectors' layout; every parameter in it must be a weight or bias
            of a tracked ``nn.Linear`` layer.
        loss_kind: the output/loss pair (fixes how targets are sampled).
        seed: seed of the target sampler (its state is in :meth:`state_dict`).

    Attributes:
        updates: how many times the factors were measured.
        examples: examples passed forward and backward by :meth:`update` so far.

    Raises:
        ValueError: a parameter of ``layout`` is not covered by a tracked layer.
    """

    fixed = True

    def __init__(self, model: nn.Module, layout: ParamLayout, loss_kind: LossKind, *, seed: int = 0) -> None:
        super().__init__(layout.numel)
        self.model = model
        self.layout = layout
        self.slots: list[tuple[KronLayer, int, int]] = []  # (layer, weight index, bias index or -1)
        covered: set[int] = set()
        for layer in find_layers(model):
            w = layout.index.get(id(layer.weight), -1)
            if w < 0:
                continue
            b = layout.index.get(id(layer.bias), -1) if layer.bias is not None else -1
            if layer.bias is not None and b < 0:
                raise ValueError(f"KFAC preconditioner: layer {layer.name!r} has its weight in the layout, not its bias")
            self.slots.append((layer, w, b))
            covered.update(i for i in (w, b) if i >= 0)
        missing = [n for i, n in enumerate(layout.names) if i not in covered]
        if missing:
            raise ValueError(
                "the KFAC preconditioner covers nn.Linear weights and biases only; these trainable parameters are "
                f"outside them: {missing[:5]}{' ...' if len(missing) > 5 else ''} (use preconditioner none/diagonal/lbfgs)"
            )
        self.capture = KronCapture(model, [s[0] for s in self.slots], loss_kind=LossKind(loss_kind), seed=seed)
        self._inverses: Optional[list[tuple[Tensor, Tensor]]] = None
        self.updates = 0
        self.examples = 0

    def update(self, chunks: Iterable[tuple[Tensor, Tensor]], damping: float, reducer: Optional[Reducer] = None) -> None:
        """Measure ``A_l`` and ``G_l`` on ``chunks`` (the curvature sample: ``(x, t)``
        pairs, ``t`` unused) and invert them for ``mu = damping`` (``lambda + l2``)."""
        reducer = reducer or LocalReducer()
        with self.capture.capturing(_SPEC) as ctx:
            with torch.enable_grad():
                for x, _ in chunks:
                    self.model(x)
                    self.examples += int(x.shape[0])
        mu = max(float(damping), 1e-12)
        inverses = []
        for layer, _, _ in self.slots:
            st = ctx.stats[layer.name]
            if st.aa_sum is None or st.sampled_gg_sum is None:
                raise RuntimeError(f"KFAC preconditioner: layer {layer.name!r} saw no curvature examples")
            counts = torch.tensor([float(st.rows), float(st.sampled_rows)], dtype=torch.float64, device=st.aa_sum.device)
            for t in (st.aa_sum, st.sampled_gg_sum, counts):
                reducer.all_reduce_(t)
            a = st.aa_sum / counts[0].item()
            g = st.sampled_gg_sum / counts[1].item()
            da, dg = pi_split(a, g, mu)
            inverses.append((damped_inverse(a, da), damped_inverse(g, dg)))
        self._inverses = inverses
        self.updates += 1

    @torch.no_grad()
    def matvec(self, v: Tensor) -> Tensor:
        if self._inverses is None:
            raise RuntimeError("KFAC preconditioner used before update(): no factors measured yet")
        parts = self.layout.unflatten(v)
        out = list(parts)
        for (layer, w, b), (h_a, h_g) in zip(self.slots, self._inverses):
            mat = parts[w] if b < 0 else torch.cat([parts[w], parts[b].unsqueeze(1)], dim=1)  # (d_out, d_a)
            pm = h_g @ mat.to(h_g.dtype) @ h_a
            out[w] = pm[:, : layer.d_in].to(v.dtype)
            if b >= 0:
                out[b] = pm[:, layer.d_in].to(v.dtype)
        return self.layout.flatten(out)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.capture.generator_state(), "updates": self.updates, "examples": self.examples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capture.load_generator_state(state.get("generator"), self.capture.seed)
        self.updates = int(state.get("updates", 0))
        self.examples = int(state.get("examples", 0))


__all__ = ["KFACPreconditioner"]
