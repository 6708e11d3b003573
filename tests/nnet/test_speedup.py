import json

import pytest

from asr_hf.nnet.speedup import compare_runs, speedup_table, time_to_target


def _run(tmp_path, name, points, wers=None):
    d = tmp_path / name
    d.mkdir()
    (d / "train_log.jsonl").write_text("".join(json.dumps({"wall_s": t, "heldout_loss": l}) + "\n"
                                               for t, l in points))
    for s, w in (wers or {}).items():
        (d / f"decode_{s}").mkdir()
        (d / f"decode_{s}" / "wer.json").write_text(json.dumps({"wer_percent": w}))
    return d


def test_time_to_target_interpolates():
    rows = [{"wall_s": 0, "heldout_loss": 3.0}, {"wall_s": 10, "heldout_loss": 2.0},
            {"wall_s": 20, "heldout_loss": 1.0}]
    assert time_to_target(rows, 1.5) == pytest.approx(15.0)
    assert time_to_target(rows, 2.0) == pytest.approx(10.0)
    assert time_to_target(rows, 0.5) is None


def test_speedup_of_faster_run(tmp_path):
    base = _run(tmp_path, "dnn_hf", [(0, 3.0), (50, 2.0), (100, 1.5)], {"dev": 20.0, "test": 21.0})
    fast = _run(tmp_path, "dnn_hf_lbfgs_sampled", [(0, 3.0), (20, 1.8), (40, 1.2)], {"dev": 19.5, "test": 21.5})
    r = compare_runs(base, fast)
    assert r.target_heldout_loss == 1.5 and r.baseline_time_s == 100
    assert r.candidate_time_s == pytest.approx(20 + 20 * (0.3 / 0.6))
    assert r.speedup == pytest.approx(100 / 30)
    assert r.wer["dev"]["diff"] == pytest.approx(-0.5) and r.wer["test"]["diff"] == pytest.approx(0.5)
    table = speedup_table([r])
    assert "3.33x" in table and "20.00 / 19.50 (-0.50)" in table
