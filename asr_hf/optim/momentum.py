"""Moving averages and momentum buffers: the one implementation every optimizer here uses.

Two momentum rules, both on a buffer kept in a per-parameter state dict:

* heavy ball (:class:`MomentumRule.HEAVY_BALL`, :class:`torch.optim.SGD` without dampening):
  ``b_1 = g_1``, ``b_k = mu b_{k-1} + g_k``; the step is ``-lr b_k``;
* moving average (:class:`MomentumRule.AVERAGE`, the K-BFGS authors' momentum used by KFAC
  and K-BFGS): ``m_0 = 0``, ``m_k = mu m_{k-1} + (1 - mu) g_k``.

``mu = 0`` returns ``g`` itself and keeps no buffer (both rules).
"""

from __future__ import annotations

import enum
from typing import Any

import torch

Tensor = torch.Tensor

#: the state-dict key of the buffer (torch.optim.SGD's, so states stay interchangeable)
BUFFER_KEY = "momentum_buffer"


class MomentumRule(str, enum.Enum):
    HEAVY_BALL = "heavy_ball"
    AVERAGE = "average"


def ema_(avg: Tensor, new: Tensor, decay: float) -> Tensor:
    """In place ``avg <- decay * avg + (1 - decay) * new``; returns ``avg``."""
    return avg.mul_(decay).add_(new, alpha=1.0 - decay)


def momentum_(state: dict[str, Any], g: Tensor, mu: float, rule: MomentumRule) -> Tensor:
    """Fold ``g`` into ``state``'s momentum buffer by ``rule`` (module docstring).

    Args:
        state: the parameter's optimizer state; its ``"momentum_buffer"`` is created on
            the first call (a copy of ``g`` for the heavy ball, zeros for the average).
        g: this step's (weight-decayed) gradient, any shape.
        mu: momentum coefficient in ``[0, 1)``.
        rule: heavy ball or moving average.

    Returns:
        The updated buffer itself (heavy ball; callers must not modify it) or, for the
        moving average, a copy of it; ``g`` when ``mu == 0``.
    """
    if mu == 0:
        return g
    buf = state.get(BUFFER_KEY)
    if rule is MomentumRule.HEAVY_BALL:
        if buf is None:
            buf = state[BUFFER_KEY] = torch.clone(g).detach()
        else:
            buf.mul_(mu).add_(g)
        return buf
    if buf is None:
        buf = state[BUFFER_KEY] = torch.zeros_like(g)
    return ema_(buf, g, mu).clone()


__all__ = ["BUFFER_KEY", "MomentumRule", "ema_", "momentum_"]
