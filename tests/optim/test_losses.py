"""The loss algebra shared by HF, KFAC and K-BFGS, against autograd and the definitions."""

import pytest
import torch

from asr_hf.optim.base import LossKind
from asr_hf.optim.losses import loss_output_grad, loss_sum, sample_targets

D = torch.float64


def _targets(kind: LossKind, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    if kind is LossKind.CROSS_ENTROPY:
        return torch.randint(0, shape[-1], shape[:-1], generator=g)
    if kind is LossKind.MSE:
        return torch.randn(shape, generator=g, dtype=D)
    return torch.rand(shape, generator=g, dtype=D)


@pytest.mark.parametrize("kind", list(LossKind))
def test_output_gradient_is_the_autograd_gradient_of_the_loss_sum(kind):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 4, generator=g, dtype=D, requires_grad=True)
    t = _targets(kind, (7, 4), g)
    (auto,) = torch.autograd.grad(loss_sum(z, t, kind), z)
    torch.testing.assert_close(loss_output_grad(z.detach(), t, kind), auto)


@pytest.mark.parametrize("kind", list(LossKind))
def test_leading_positions_are_examples(kind):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 5, 3, generator=g, dtype=D)  # (..., C): every leading position an example
    t = _targets(kind, (2, 5, 3), g)
    flat_t = t.reshape(-1) if kind is LossKind.CROSS_ENTROPY else t.reshape(-1, 3)
    torch.testing.assert_close(loss_sum(z, t, kind), loss_sum(z.reshape(-1, 3), flat_t, kind))


def test_sampled_targets_and_summed_losses():
    g = torch.Generator().manual_seed(3)
    z = torch.tensor([[2.0, 0.0, -1.0]], dtype=D).expand(20000, 3)
    t = sample_targets(z, LossKind.CROSS_ENTROPY, g)
    freq = torch.bincount(t, minlength=3).to(D) / t.numel()
    torch.testing.assert_close(freq, torch.softmax(z[0], 0), atol=0.015, rtol=0)
    zb = torch.full((20000, 2), 0.5, dtype=D)
    tb = sample_targets(zb, LossKind.BCE, g)
    assert set(tb.unique().tolist()) <= {0.0, 1.0}
    assert tb.mean().item() == pytest.approx(torch.sigmoid(torch.tensor(0.5)).item(), abs=0.015)
    zm = torch.zeros(20000, 2, dtype=D)
    tm = sample_targets(zm, LossKind.MSE, g)
    assert tm.std().item() == pytest.approx(1.0, abs=0.03)
    # Summed losses: the per-row losses summed.
    zz = torch.randn(5, 3, dtype=D)
    tt = torch.randint(0, 3, (5,))
    assert loss_sum(zz, tt, LossKind.CROSS_ENTROPY).item() == pytest.approx(
        -torch.log_softmax(zz, 1)[torch.arange(5), tt].sum().item()
    )
    y = torch.rand(5, 3, dtype=D)
    assert loss_sum(zz, y, LossKind.MSE).item() == pytest.approx(0.5 * ((zz - y) ** 2).sum().item())
    p = torch.sigmoid(zz)
    bce = -(y * p.log() + (1 - y) * (1 - p).log()).sum().item()
    assert loss_sum(zz, y, LossKind.BCE).item() == pytest.approx(bce)
