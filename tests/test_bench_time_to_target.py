"""bench/bench_time_to_target.py's analysis on hand-made training logs."""

import importlib.util
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_ttt", ROOT / "bench" / "bench_time_to_target.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(exp, name, optimizer, points, hf=False):
    d = exp / name
    d.mkdir(parents=True)
    rows = []
    for i, (t, loss) in enumerate(points):
        r = {"index": i, "wall_s": t, "heldout_loss": loss}
        if i:
            r.update(frames_per_s=1000.0, epoch_s=t - points[i - 1][0])
            if hf:
                r.update(opt_examples_grad=500.0 * i, opt_examples_curv=50.0 * i)
        rows.append(r)
    (d / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "train_summary.json").write_text(json.dumps({"optimizer": optimizer}))


def test_targets_times_work_and_misses(tmp_path):
    exp = tmp_path / "exp"
    _run(exp, "dnn_sgd", "sgd", [(0, 3.0), (10, 2.0), (20, 1.5)])
    _run(exp, "dnn_hf", "hf", [(0, 3.0), (5, 1.5), (10, 1.2)], hf=True)
    _run(exp, "dnn_kbfgs_l", "kbfgs_l", [(0, 3.0), (30, 2.5)])
    b = _bench()
    res = b.analyse(exp, ["sgd", "hf", "kbfgs_l"], ggn_cost=2.0)
    assert res["targets"]["sgd"][0] == 1.5
    assert math.isclose(res["targets"]["strict"][0], 1.2 * 1.01)
    hf = res["optimizers"]["hf"]
    assert hf["time_to_sgd_target_s"] == [5.0] and math.isclose(hf["median_time_to_strict_target_s"], 5 + 5 * 0.288 / 0.3)
    assert hf["work_to_sgd_target"] == [500.0 + 2.0 * 50.0]  # gradient + GGN examples at their cost
    assert hf["steps_to_sgd_target"] == [1] and hf["seconds_per_step"] == [5.0]  # iterations needed x their cost
    sgd = res["optimizers"]["sgd"]
    assert sgd["time_to_sgd_target_s"] == [20.0] and sgd["time_to_strict_target_s"] == [math.inf]
    assert sgd["work_to_sgd_target"] == [10_000.0 + 10_000.0]
    kb = res["optimizers"]["kbfgs_l"]
    assert kb["time_to_sgd_target_s"] == [math.inf] and kb["work_to_sgd_target"] == [None]
    assert kb["steps_to_sgd_target"] == [None] and kb["seconds_per_step"] == [30.0]
    table = b.markdown(res)
    assert table.index("| hf |") < table.index("| sgd |") < table.index("| kbfgs_l |") and "miss" in table
    assert json.dumps(b._finite(res), allow_nan=False)
