import json

import pytest

from asr_hf.nnet.speedup import compare_runs, compare_seeds, seed_table, speedup_table, time_to_target


def _run(tmp_path, name, points, wers=None, stop="converged"):
    d = tmp_path / name
    d.mkdir()
    rows = [{"wall_s": t, "heldout_loss": l, "opt_examples_grad": 100.0 * i, "opt_examples_curv": 10.0 * i,
             "opt_cg_iters_total": 5.0 * i} for i, (t, l) in enumerate(points)]  # fmt: skip
    (d / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "train_summary.json").write_text(json.dumps({"stop_reason": stop}))
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
    # work to the target: the baseline at its iteration 2 (220 examples), the candidate at 2 (220)
    assert r.baseline_work["examples_grad"] == 200 and r.candidate_work["examples_curv"] == 20
    assert r.baseline_stop == r.candidate_stop == "converged"
    table = speedup_table([r])
    assert "3.33x" in table and "20.00 / 19.50, -0.50" in table


def test_seeds_pair_with_the_baseline_of_the_same_seed_and_misses_count(tmp_path):
    _run(tmp_path, "dnn_hf", [(0, 3.0), (100, 1.5)])
    _run(tmp_path, "dnn_hf_s1", [(0, 3.0), (80, 1.6)])
    _run(tmp_path, "dnn_hf_lbfgs", [(0, 3.0), (50, 1.5)])  # 2x on seed 0
    _run(tmp_path, "dnn_hf_lbfgs_s1", [(0, 3.0), (40, 1.7)], stop="max_iters")  # misses seed 1's 1.6
    _run(tmp_path, "dnn_hf_lbfgs_sampled", [(0, 3.0), (25, 1.4)])
    results, summaries = compare_seeds(tmp_path, "hf", ["hf_lbfgs", "hf_lbfgs_sampled"])
    assert [(r.baseline, r.candidate) for r in results] == [
        ("dnn_hf", "dnn_hf_lbfgs"), ("dnn_hf_s1", "dnn_hf_lbfgs_s1"), ("dnn_hf", "dnn_hf_lbfgs_sampled")]
    lb = summaries[0]
    assert lb.seeds == 2 and lb.reached == 1 and lb.min_speedup == 0.0 and lb.max_speedup == pytest.approx(2.0)
    assert lb.median_speedup == pytest.approx(1.0)  # median of {0 (miss), 2}
    assert "1/2" in seed_table(summaries)


def test_explicit_target_and_a_baseline_that_never_reaches_it(tmp_path):
    base = _run(tmp_path, "dnn_hf", [(0, 3.0), (50, 2.0), (100, 1.5)], stop="max_iters")
    fast = _run(tmp_path, "dnn_hf_sampled", [(0, 3.0), (20, 2.0), (40, 1.6)], stop="max_iters")
    r = compare_runs(base, fast, target=2.0)  # a common target both reached
    assert r.target_heldout_loss == 2.0 and r.speedup == pytest.approx(50 / 20)
    assert r.baseline_stop == "max_iters"
    with pytest.raises(Exception, match="never reached"):
        compare_runs(base, fast, target=1.0)


def test_cg_iterations_per_hf_iteration_and_total_work(tmp_path):
    def run(name, cg):
        d = tmp_path / name
        d.mkdir()
        rows = [{"wall_s": 0.0, "heldout_loss": 3.0}]
        for i, c in enumerate(cg, 1):
            rows.append({"wall_s": 10.0 * i, "heldout_loss": 3.0 - 0.1 * i, "opt_cg_iters": c, "opt_time_cg": c / 10,
                         "opt_examples_grad": 100.0 * i, "opt_examples_curv": 10.0 * c * i,
                         "opt_cg_iters_total": float(sum(cg[:i]))})  # fmt: skip
        (d / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d

    base, cand = run("dnn_hf", [30, 40, 50, 40]), run("dnn_hf_lbfgs", [20, 10, 20, 30])
    r = compare_runs(base, cand)
    assert r.baseline_cg_iters == 40 and r.candidate_cg_iters == 20  # medians over the run
    assert r.baseline_cg_s == pytest.approx(4.0) and r.candidate_cg_s == pytest.approx(2.0)
    assert r.candidate_total_work == {"examples_grad": 400.0, "examples_curv": 1200.0, "examples_precond": 0.0,
                                       "cg_iters_total": 80.0}
    assert "40 / 20" in speedup_table([r]) and "0.0016" not in speedup_table([r])
    _, summaries = compare_seeds(tmp_path, "hf", ["hf_lbfgs"])
    assert summaries[0].median_cg_iters_ratio == pytest.approx(2.0) and "2.00x" in seed_table(summaries)


def test_speedup_at_the_looser_target_ignores_the_flat_tail(tmp_path):
    # the baseline crawls from 1.01 to 1.00 in its last 100 s; the candidate gets to 1.005 fast, then stops
    base = _run(tmp_path, "dnn_hf", [(0, 3.0), (50, 1.01), (150, 1.0)])
    cand = _run(tmp_path, "dnn_hf_lbfgs", [(0, 3.0), (20, 1.005)])
    r = compare_runs(base, cand, slack=0.01)
    assert r.speedup is None  # never reached the converged 1.00
    # 1.01 = 1.00 * 1.01: the baseline at 50 s; the candidate crosses 1.01 at 20 * (1.99 / 1.995) s
    assert r.slack_speedup == pytest.approx(50 / (20 * 1.99 / 1.995))
    _, summaries = compare_seeds(tmp_path, "hf", ["hf_lbfgs"])
    assert summaries[0].slack_reached == 1 and "reached CE +1%" in seed_table(summaries)


def test_report_pairs_speed_perturbed_runs_only_with_their_own_baseline(tmp_path):
    """``dnn_hf_sp`` and ``dnn_hf_lbfgs_sampled_sp`` (the recipes' --speed-perturb) make a
    headline of their own: neither is compared with the default data's ``dnn_hf``."""
    from asr_hf.decode.report import hf_speedup_section

    def run(name, optimizer, feats, points):
        d = _run(tmp_path, name, points)
        (d / "config.yaml").write_text(f"data:\n  feats_dir: {feats}\nmodel:\n  hidden_dim: 256\n"
                                       f"optim:\n  name: {optimizer}\n")  # fmt: skip

    run("dnn_hf", "hf", "data/gmmfeats_tri3", [(0, 3.0), (100, 1.5)])
    run("dnn_hf_lbfgs_sampled", "hf_lbfgs_sampled", "data/gmmfeats_tri3", [(0, 3.0), (50, 1.5)])  # 2x
    run("dnn_hf_sp", "hf", "data/gmmfeats_tri3_sp", [(0, 3.0), (300, 1.2)])
    run("dnn_hf_lbfgs_sampled_sp", "hf_lbfgs_sampled", "data/gmmfeats_tri3_sp", [(0, 3.0), (100, 1.2)])  # 3x
    md = hf_speedup_section(tmp_path)
    default, sp = md.split("## HF speed-up at baseline `hf_sp`")
    assert "baseline `hf`'s" in default and "| dnn_hf | dnn_hf_lbfgs_sampled | 1.5000 |" in default
    assert "_sp" not in default and "2.00x" in default
    assert "| dnn_hf_sp | dnn_hf_lbfgs_sampled_sp | 1.2000 |" in sp and "3.00x" in sp
    # a run on other data with no baseline of its own is left out, not paired with dnn_hf
    run("dnn_hf_sampled_sp", "hf_sampled", "data/gmmfeats_tri3_sp", [(0, 3.0), (20, 1.5)])
    import shutil

    shutil.rmtree(tmp_path / "dnn_hf_sp")
    md = hf_speedup_section(tmp_path)
    assert "_sp" not in md and "dnn_hf_lbfgs_sampled" in md
