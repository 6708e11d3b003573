"""AlgoPerf-style time-to-target comparison of optimizers on the recipe's DNN task.

Every selected optimizer trains the same DNN on the same data (a recipe dir whose
stages 0-7 are done).  Held-out cross-entropy is evaluated after every epoch / HF iteration outside
the timed region (the trainer's ``wall_s`` excludes evaluation).  Per optimizer and
seed it reports:

Every run ends by its own stopping rule: SGD by newbob, every other optimizer by
``trainer.convergence`` (held-out CE gain below 0.05% over 5 epochs / HF iterations
that took a step).

* time to two targets: the held-out CE that converged SGD-newbob reaches (same seed),
  and a stricter one, the best converged CE among all optimizers plus 1%; a miss
  counts as infinite;
* work to the targets in gradient-equivalents: frames through a forward+backward
  pass (``frames_seen`` of minibatch optimizers; K-BFGS does a second pass per
  minibatch and counts 2x; HF: gradient examples, plus the KFAC preconditioner's factor
  pass, plus curvature examples x the measured cost of one GGN-product frame relative to
  one gradient frame, ``--ggn-cost``);
* the final dev/test WER with its 95% bootstrap interval (first seed; with more decoded
  seeds also their median);
* the median over seeds of the times.

Runs the training/decoding through the recipe (``--train``), or only analyses exp
dirs that exist.  Prints a markdown table, draws held-out CE vs time for all runs on
one chart, and ends with one JSON line.

    python bench/bench_time_to_target.py recipes/synth_bn --train --seeds 0 1 2 \\
        --optimizers sgd adamw soap psgd kfac kbfgs_l hf hf_lbfgs_sampled
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_hf.nnet.speedup import read_log, runs_by_seed, time_to_target  # noqa: E402

def _finite(obj: Any) -> Any:
    """``inf`` / ``nan`` -> ``None`` (JSON has no such numbers), recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def train(recipe: Path, optimizers: list[str], seeds: list[int], extra: list[str]) -> None:
    """Stages 8-9 of the recipe for every optimizer and seed (finished runs are skipped)."""
    style = "swb" if "swb" in recipe.name else "bn"
    cmd = ["bash", str(Path(__file__).resolve().parents[1] / "recipes/common/synth_recipe.sh"), "--style", style,
           "--stage", "8", "--stop-stage", "9", "--optimizers", " ".join(optimizers),
           "--seeds", " ".join(map(str, seeds)), "--", *extra]  # fmt: skip
    subprocess.run(cmd, cwd=recipe, check=True)


def work(exp_dir: Path, rows: list[dict], upto: Optional[float], ggn_cost: float) -> Optional[float]:
    """Gradient-equivalents spent until wall time ``upto`` (the first logged row at or
    after it), or None for a miss."""
    if upto is None:
        return None
    opt = json.loads((exp_dir / "train_summary.json").read_text()).get("optimizer", "") if (
        exp_dir / "train_summary.json").is_file() else ""
    frames = 0.0
    for r in rows:
        if r.get("index", 0) == 0:
            continue
        if "opt_examples_grad" in r:  # HF: cumulative counters
            frames = (float(r["opt_examples_grad"]) + ggn_cost * float(r.get("opt_examples_curv", 0.0))
                      + float(r.get("opt_examples_precond") or 0.0))  # KFAC factor pass: one fwd+bwd per example
        else:
            per_frame = 2.0 if opt.startswith("kbfgs") else 1.0
            frames += per_frame * float(r.get("frames_per_s", 0.0)) * float(r.get("epoch_s", 0.0))
        if float(r["wall_s"]) >= upto:
            break
    return frames


def steps(rows: list[dict], target: Optional[float] = None) -> Optional[int]:
    """Epochs / HF iterations logged (``target=None``), or the first one whose held-out CE
    is at or below ``target`` (None for a miss): the "iterations needed" half of the time."""
    done = [r for r in rows if r.get("index", 0) > 0]
    if target is None:
        return len(done)
    return next((int(r["index"]) for r in done if float(r["heldout_loss"]) <= target), None)


def wer_with_ci(exp_dir: Path) -> dict[str, Any]:
    from asr_hf.decode.significance import bootstrap_wer_ci, utterance_errors

    out = {}
    for s in ("dev", "test"):
        d = exp_dir / f"decode_{s}"
        if (d / "hyp.txt").is_file():
            ue = utterance_errors(d)
            out[s] = {"wer": round(ue.wer, 2), "ci": [round(v, 2) for v in bootstrap_wer_ci(ue)]}
    return out


def analyse(exp: Path, optimizers: list[str], ggn_cost: float) -> dict[str, Any]:
    runs = {o: runs_by_seed(exp, o) for o in optimizers}
    runs = {o: r for o, r in runs.items() if r}
    if "sgd" not in runs:
        raise SystemExit(f"{exp}: no converged dnn_sgd[_s<k>] run: the first target is SGD-newbob's")
    logs = {o: {s: read_log(d) for s, d in r.items()} for o, r in runs.items()}
    final = {o: {s: min(float(x["heldout_loss"]) for x in rows) for s, rows in by.items()} for o, by in logs.items()}
    per_seed_best = {}
    for s in runs["sgd"]:
        vals = [final[o][s] for o in final if s in final[o] and math.isfinite(final[o][s])]
        per_seed_best[s] = min(vals) * 1.01
    table: dict[str, Any] = {}
    for o, by in logs.items():
        t_sgd, t_strict, w_sgd, w_strict, n_sgd, per_step = [], [], [], [], [], []
        for s, rows in by.items():
            if s not in runs["sgd"]:
                continue
            target_sgd = float(logs["sgd"][s][-1]["heldout_loss"])
            a, b = time_to_target(rows, target_sgd), time_to_target(rows, per_seed_best[s])
            t_sgd.append(math.inf if a is None else a)
            t_strict.append(math.inf if b is None else b)
            w_sgd.append(work(runs[o][s], rows, a, ggn_cost))
            w_strict.append(work(runs[o][s], rows, b, ggn_cost))
            n_sgd.append(steps(rows, target_sgd))
            total = steps(rows)
            per_step.append(float(rows[-1]["wall_s"]) / total if total else None)
        table[o] = {
            "seeds": sorted(by),
            "time_to_sgd_target_s": t_sgd,
            "time_to_strict_target_s": t_strict,
            "median_time_to_sgd_target_s": statistics.median(t_sgd) if t_sgd else None,
            "median_time_to_strict_target_s": statistics.median(t_strict) if t_strict else None,
            "work_to_sgd_target": w_sgd,
            "work_to_strict_target": w_strict,
            "steps_to_sgd_target": n_sgd,
            "seconds_per_step": per_step,
            "final_heldout_ce": {s: round(v, 4) for s, v in final[o].items()},
            "train_wall_s": {s: round(float(rows[-1]["wall_s"]), 1) for s, rows in by.items()},
            "wer": wer_with_ci(runs[o][min(by)]),
            "wer_by_seed": {s: wer_with_ci(runs[o][s]) for s in sorted(by)},
        }
    return {"targets": {"sgd": {s: float(logs["sgd"][s][-1]["heldout_loss"]) for s in runs["sgd"]},
                        "strict": per_seed_best}, "optimizers": table}  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    def t(v: Optional[float]) -> str:
        return "miss" if v is None or not math.isfinite(v) else f"{v:.0f}"

    def w(vs: list[Optional[float]]) -> str:
        ok = [v for v in vs if v is not None]
        return "miss" if len(ok) < len(vs) or not ok else f"{statistics.median(ok) / 1e6:.2f}M"

    def n(vs: list[Optional[float]], fmt: str) -> str:
        ok = [v for v in vs if v is not None]
        return "miss" if len(ok) < len(vs) or not ok else fmt.format(statistics.median(ok))

    head = ["optimizer", "seeds", "time to SGD target s (median)", "time to strict target s (median)",
            "work to SGD target (grad-eq. frames)", "epochs / HF its to SGD target", "s per epoch / HF it",
            "final held-out CE", "dev %WER [95% CI]", "test %WER [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(res["optimizers"], key=lambda o: res["optimizers"][o]["median_time_to_sgd_target_s"] or math.inf)
    for o in order:
        r = res["optimizers"][o]
        wer = {s: (f"{v['wer']:.2f} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]" if v else "-")
               for s, v in ((s, r["wer"].get(s)) for s in ("dev", "test"))}  # fmt: skip
        for s in ("dev", "test"):  # more decoded seeds: their median next to the first seed's CI
            vals = [w[s]["wer"] for w in r.get("wer_by_seed", {}).values() if s in w]
            if len(vals) > 1:
                wer[s] += f", median of {len(vals)} seeds {statistics.median(vals):.2f}"
        ce = statistics.median(r["final_heldout_ce"].values())
        lines.append(f"| {o} | {len(r['seeds'])} | {t(r['median_time_to_sgd_target_s'])} | "
                     f"{t(r['median_time_to_strict_target_s'])} | {w(r['work_to_sgd_target'])} | "
                     f"{n(r['steps_to_sgd_target'], '{:.0f}')} | {n(r['seconds_per_step'], '{:.1f}')} | {ce:.4f} | "
                     f"{wer['dev']} | {wer['test']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(exp: Path, optimizers: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for o in optimizers:
        for s, d in sorted(runs_by_seed(exp, o).items()):
            rows = read_log(d)
            ax.plot([r["wall_s"] for r in rows], [r["heldout_loss"] for r in rows], lw=1,
                    label=o if s == min(runs_by_seed(exp, o)) else None)  # fmt: skip
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("held-out cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", type=Path, help="recipe dir with stages 0-7 done (e.g. recipes/synth_bn)")
    ap.add_argument("--optimizers", nargs="+",
                    default=["sgd", "adamw", "soap", "psgd", "kfac", "kbfgs_l", "hf", "hf_lbfgs_sampled"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--train", action="store_true", help="run the missing trainings and decodes first")
    ap.add_argument("--ggn-cost", type=float, default=1.0,
                    help="cost of a GGN-product frame in gradient frames (bench/bench_ggn.py measures it)")
    ap.add_argument("--plot", type=Path, default=None, help="held-out CE vs time chart (default exp/time_to_target.png)")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    ap.add_argument("--exp", type=Path, default=None,
                    help="analyse this dir of dnn_* runs instead of <recipe>/exp (e.g. an archived copy)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = ap.parse_args()
    if args.train:
        train(args.recipe, args.optimizers, args.seeds, args.overrides)
    exp = args.exp or args.recipe / "exp"
    res = analyse(exp, args.optimizers, args.ggn_cost)
    table = markdown(res)
    print(table, end="")
    if args.out:
        args.out.write_text(table)
    plot(exp, args.optimizers, args.plot or exp / "time_to_target.png")
    print(json.dumps(_finite({"bench": "time_to_target", "recipe": str(args.recipe), "ggn_cost": args.ggn_cost,
                              **res}), allow_nan=False))


if __name__ == "__main__":
    main()
