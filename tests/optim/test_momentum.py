"""The one momentum helper: the heavy ball equals torch.optim.SGD's buffer, the moving
average is ``m_k = mu m_{k-1} + (1 - mu) g_k`` from ``m_0 = 0``."""

import torch

from asr_hf.optim.momentum import BUFFER_KEY, MomentumRule, momentum_

D = torch.float64


def test_heavy_ball_is_torch_sgd_momentum():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 2, generator=g, dtype=D) for _ in range(4)]
    p = torch.nn.Parameter(torch.zeros(3, 2, dtype=D))
    sgd = torch.optim.SGD([p], lr=1.0, momentum=0.7)
    state: dict = {}
    for grad in grads:
        p.grad = grad.clone()
        sgd.step()
        mine = momentum_(state, grad, 0.7, MomentumRule.HEAVY_BALL)
        torch.testing.assert_close(mine, sgd.state[p][BUFFER_KEY], rtol=0, atol=0)


def test_moving_average_and_zero_momentum():
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(4, generator=g, dtype=D) for _ in range(3)]
    state: dict = {}
    ref = torch.zeros(4, dtype=D)
    for grad in grads:
        ref = 0.9 * ref + 0.1 * grad
        out = momentum_(state, grad, 0.9, MomentumRule.AVERAGE)
        torch.testing.assert_close(out, ref)
        assert out is not state[BUFFER_KEY]  # a copy: the caller may change it
    for rule in MomentumRule:
        empty: dict = {}
        assert momentum_(empty, grads[0], 0.0, rule) is grads[0] and not empty
