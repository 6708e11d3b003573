"""Hessian-free guards: a non-finite loss, gradient or CG solution rejects the step
(parameters unchanged, lambda raised, no non-finite warm start); damping options that
cannot work are refused."""

import math

import pytest
import torch
from torch import nn

import asr_hf.optim.hf as hf_module
from asr_hf.optim.base import LossKind, SampledData, TensorSource
from asr_hf.optim.layout import ParamLayout
from asr_hf.optim.hf import NONFINITE_CODES, HessianFree, HFConfig

DT = torch.float64


def _problem(n: int = 120, d: int = 4, c: int = 3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=DT)
    t = torch.randint(0, c, (n,), generator=g)
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, c)).to(DT), x, t


def test_nonfinite_gradient_rejects_step_and_raises_damping():
    model, x, t = _problem()
    bad = x.clone()
    bad[7, 2] = float("nan")  # one poisoned frame in the (whole-set) gradient sample
    opt = HessianFree(model, LossKind.CROSS_ENTROPY, curv_fraction=1.0, initial_damping=0.5)
    theta = ParamLayout.from_module(model).get_flat().clone()
    stats = opt.step(SampledData(TensorSource(bad, t), TensorSource(x, t)))
    assert torch.equal(ParamLayout.from_module(model).get_flat(), theta)
    assert stats["accepted"] == 0.0 and stats["nonfinite"] == NONFINITE_CODES["loss"]
    assert opt.damping == pytest.approx(0.75) and stats["next_lambda"] == pytest.approx(0.75)
    assert torch.count_nonzero(opt.prev_solution) == 0
    # clean data: the next step goes ahead from where it was
    stats = opt.step(SampledData(TensorSource(x, t), TensorSource(x, t)))
    assert stats["nonfinite"] == 0.0 and stats["accepted"] == 1.0
    assert torch.isfinite(ParamLayout.from_module(model).get_flat()).all()


def test_nonfinite_cg_solution_is_not_applied(monkeypatch):
    model, x, t = _problem()
    real_cg = hf_module.conjugate_gradient

    def nan_cg(*args, **kwargs):
        res = real_cg(*args, **kwargs)
        res.x = torch.full_like(res.x, float("nan"))
        return res

    monkeypatch.setattr(hf_module, "conjugate_gradient", nan_cg)
    opt = HessianFree(model, LossKind.CROSS_ENTROPY, curv_fraction=1.0, initial_damping=0.5, line_search=False)
    theta = ParamLayout.from_module(model).get_flat().clone()
    src = TensorSource(x, t)
    stats = opt.step(SampledData(src, src))
    assert torch.equal(ParamLayout.from_module(model).get_flat(), theta)
    assert stats["nonfinite"] == NONFINITE_CODES["CG solution"] and stats["accepted"] == 0.0
    assert opt.damping == pytest.approx(0.75) and math.isfinite(stats["loss"])
    assert torch.count_nonzero(opt.prev_solution) == 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"initial_damping": 0.0}, "initial_damping must be > 0, got 0.0"),
        ({"initial_damping": float("nan")}, "initial_damping must be > 0, got nan"),
        ({"min_damping": -1.0}, r"min_damping must be in \[0, initial_damping=1.0\], got -1.0"),
        ({"initial_damping": 0.01, "min_damping": 0.1}, r"min_damping must be in \[0, initial_damping=0.01\], got 0.1"),
    ],
)
def test_damping_options_that_cannot_work_are_refused(options, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        HFConfig(**options)
