"""Sample-size schedules and the resumable sampler."""

import math

import pytest
import torch

from asr_hf.optim.sampling import DataSampler, FixedFractionSchedule, GeometricSchedule


def test_fixed_fraction_schedule() -> None:
    s = FixedFractionSchedule(0.01)
    assert [s.size(k, 10_000) for k in range(3)] == [100, 100, 100]
    assert FixedFractionSchedule(0.01, min_size=500).size(0, 10_000) == 500
    assert FixedFractionSchedule(0.5, max_size=300).size(7, 10_000) == 300
    assert FixedFractionSchedule(1.0).size(0, 123) == 123
    assert FixedFractionSchedule(0.001).size(0, 10) == 1  # at least one example
    with pytest.raises(ValueError):
        FixedFractionSchedule(0.0)


def test_geometric_schedule_grows_to_the_cap() -> None:
    s = GeometricSchedule(initial=0.01, growth=1.5)
    n = 100_000
    sizes = [s.size(k, n) for k in range(15)]
    assert sizes[:4] == [1000, 1500, 2250, 3375]
    assert all(sizes[k] == min(n, math.ceil(1000 * 1.5**k - 1e-9)) for k in range(15))
    assert sizes[-1] == n and s.size(10_000, n) == n  # no overflow for huge k
    capped = GeometricSchedule(initial=0.01, growth=2.0, max_fraction=0.1, max_size=8000)
    assert [capped.size(k, n) for k in range(5)] == [1000, 2000, 4000, 8000, 8000]
    assert GeometricSchedule(0.01, 2.0, max_fraction=0.05).size(9, n) == 5000
    with pytest.raises(ValueError):
        GeometricSchedule(0.1, 0.9)


def test_sampler_nested_sorted_and_resumable() -> None:
    smp = DataSampler(FixedFractionSchedule(0.5), GeometricSchedule(0.1, 2.0), seed=3)
    a = smp.draw(100)
    assert a.grad.numel() == 50 and a.curv.numel() == 10
    assert torch.equal(a.grad, a.grad.sort().values) and a.grad.unique().numel() == 50
    assert set(a.curv.tolist()) <= set(a.grad.tolist())  # curvature sample inside gradient sample
    smp.advance()
    state = smp.state_dict()
    b = smp.draw(100)
    assert b.curv.numel() == 20 and b.iteration == 1
    other = DataSampler(FixedFractionSchedule(0.5), GeometricSchedule(0.1, 2.0), seed=99)
    other.load_state_dict(state)
    b2 = other.draw(100)
    assert torch.equal(b.grad, b2.grad) and torch.equal(b.curv, b2.curv) and b2.iteration == 1
    again = DataSampler(FixedFractionSchedule(0.5), GeometricSchedule(0.1, 2.0), seed=3).draw(100)
    assert torch.equal(again.grad, a.grad)


def test_independent_samples_and_heldout_subsets() -> None:
    smp = DataSampler(FixedFractionSchedule(0.2), FixedFractionSchedule(0.2), seed=0, nested=False, heldout_size=7)
    s = smp.draw(1000)
    assert not torch.equal(s.grad, s.curv)
    h = smp.heldout(50)
    assert h.numel() == 7 and h.unique().numel() == 7 and int(h.max()) < 50
    assert torch.equal(DataSampler(FixedFractionSchedule(1.0), FixedFractionSchedule(1.0)).heldout(5), torch.arange(5))
    full = DataSampler(FixedFractionSchedule(1.0), FixedFractionSchedule(1.0)).draw(20)
    assert torch.equal(full.grad, torch.arange(20)) and torch.equal(full.curv, torch.arange(20))
