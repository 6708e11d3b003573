"""Delta features against Kaldi's formula, and the front-end pipeline."""

import numpy as np
import pytest

from asr_hf.gmm.feats import FeaturePipeline, add_deltas, delta_filters


def _reference_deltas(x: np.ndarray, window: int = 2) -> np.ndarray:
    """Kaldi's add-deltas (order 2) written out frame by frame in float64."""
    t, d = x.shape
    norm = sum(n * n for n in range(-window, window + 1))

    def clamp(i: int) -> int:
        return min(max(i, 0), t - 1)

    d1 = np.zeros((t, d))
    for i in range(t):
        for n in range(-window, window + 1):
            d1[i] += n * x[clamp(i + n)] / norm
    # second order: the first-order filter applied twice, edges replicated on x
    c1 = {n: n / norm for n in range(-window, window + 1)}
    d2 = np.zeros((t, d))
    for i in range(t):
        for a, ca in c1.items():
            for b, cb in c1.items():
                d2[i] += ca * cb * x[clamp(i + a + b)]
    return np.concatenate([x, d1, d2], axis=1)


@pytest.mark.parametrize("t", [1, 2, 5, 37])
def test_add_deltas_matches_kaldi_formula(t):
    rng = np.random.default_rng(t)
    x = rng.normal(size=(t, 13))
    got = add_deltas(x)
    assert got.shape == (t, 39) and got.dtype == np.float32
    np.testing.assert_allclose(got, _reference_deltas(x), rtol=1e-5, atol=1e-5)


def test_delta_filters_are_kaldis():
    f = delta_filters(2, 2)
    np.testing.assert_allclose(f[1], np.array([-2, -1, 0, 1, 2]) / 10)
    assert len(f[2]) == 9 and abs(f[2].sum()) < 1e-12
    np.testing.assert_allclose(f[2][4], -0.1)  # centre tap: sum_n (n/10) * (-n/10)


def test_deltas_of_linear_ramp():
    # d/dt of a ramp is its slope away from the edges; second derivative 0.
    x = np.arange(20, dtype=np.float64)[:, None] * 0.5
    out = add_deltas(x)
    np.testing.assert_allclose(out[4:-4, 1], 0.5, atol=1e-6)
    np.testing.assert_allclose(out[4:-4, 2], 0.0, atol=1e-6)


def test_pipeline_cmvn_then_deltas():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 13)).astype(np.float32)
    stats = np.zeros((2, 14))
    stats[0, :13] = x.sum(0)
    stats[0, 13] = len(x)
    stats[1, :13] = (x.astype(np.float64) ** 2).sum(0)
    out = FeaturePipeline()(x, stats)
    assert out.shape == (50, 39)
    np.testing.assert_allclose(out[:, :13].mean(0), 0.0, atol=1e-5)
    out_v = FeaturePipeline(norm_vars=True, delta_order=0)(x, stats)
    np.testing.assert_allclose(out_v.std(0), 1.0, atol=1e-4)
    with pytest.raises(ValueError):
        FeaturePipeline()(x, None)
