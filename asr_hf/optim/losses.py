"""The loss algebra of the output/loss pairs of :class:`~asr_hf.optim.base.LossKind`.

For outputs ``z_n in R^C`` and per-example losses ``l(z_n, t_n)``:

* :func:`loss_sum`: ``sum_n l(z_n, t_n)``;
* :func:`loss_output_grad`: ``dl/dz_n``, ``(N, C)``;
* :func:`output_hessian_factor` and :func:`apply_output_hessian`: ``H_n u = d^2 l / dz_n^2 u``
  applied analytically, never formed:

  * softmax cross-entropy, ``p = softmax(z)``: ``H u = p * u - p (p . u)``;
  * squared error ``0.5 |z - t|^2``: ``H u = u``;
  * logistic outputs + binary cross-entropy, ``s = sigmoid(z)``: ``H u = s (1 - s) * u``;

* :func:`sample_targets`: targets drawn from the model's predictive distribution (the
  true Fisher ``E_{t ~ p(t|z)}[g g^T]`` equals the GGN for these pairs).

Used by the HF curvature operators (:mod:`asr_hf.optim.curvature`) and by KFAC / K-BFGS
(:mod:`asr_hf.optim.kron`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from asr_hf.optim.base import LossKind

Tensor = torch.Tensor


def loss_sum(z: Tensor, t: Tensor, kind: LossKind) -> Tensor:
    """``sum_n l(z_n, t_n)`` (a scalar) for outputs ``z`` of shape ``(..., C)``: every leading
    position is an example; each example's loss is summed over its outputs (MSE, BCE).

    Targets: int64 class ids of shape ``z.shape[:-1]`` (CE), or ``z``'s shape (MSE, BCE).
    """
    if kind == LossKind.CROSS_ENTROPY:
        return F.cross_entropy(z.reshape(-1, z.shape[-1]), t.reshape(-1), reduction="sum")
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


def sample_targets(output: torch.Tensor, loss_kind: LossKind, generator: torch.Generator) -> torch.Tensor:
    """Draw targets from the model's predictive distribution.

    * cross entropy: ``t ~ Categorical(softmax(z))``, shape ``output.shape[:-1]``, int64;
    * MSE (``0.5 |y - t|^2`` is the NLL of ``N(y, I)``): ``t = y + eps``, ``eps ~ N(0, I)``;
    * BCE: ``t ~ Bernoulli(sigmoid(z))`` elementwise.
    """
    kind = LossKind(loss_kind)
    # A diverged model (non-finite outputs) must not crash the sampler: the closure's loss
    # already reports the divergence to the trainer.
    output = torch.nan_to_num(output, nan=0.0, posinf=1e4, neginf=-1e4)
    if kind is LossKind.CROSS_ENTROPY:
        probs = torch.softmax(output.reshape(-1, output.shape[-1]).float(), dim=-1)
        return torch.multinomial(probs, 1, generator=generator).reshape(output.shape[:-1])
    if kind is LossKind.MSE:
        noise = torch.randn(output.shape, generator=generator, device=output.device, dtype=output.dtype)
        return output + noise
    if kind is LossKind.BCE:
        return torch.bernoulli(torch.sigmoid(output), generator=generator)
    raise ValueError(f"no sampler for loss kind {kind}")


__all__ = [
    "apply_output_hessian",
    "loss_output_grad",
    "loss_sum",
    "output_hessian_factor",
    "sample_targets",
]
