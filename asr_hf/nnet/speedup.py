"""The papers' headline measurement, at convergence: time (and work) to a target
held-out loss, with WER differences and their paired-bootstrap intervals, over seeds.

Sainath et al. (2013) report how much faster HF with L-BFGS preconditioning and
geometric sampling reaches the held-out cross-entropy that baseline HF converges to
(1.5x on BN-50, 2.3x on SWB-300), with no loss in WER.  Given converged training runs
(``train_log.jsonl``, ``train_summary.json`` and decode dirs) this computes, per seed:

* target = the baseline's final (converged) held-out cross-entropy;
* time to target = training wall time at which a run's held-out loss first reaches
  the target, linearly interpolated between logged iterations (``None``: never);
* work to target = gradient and curvature examples processed (forward + backward
  passes over one frame each; a GGN product costs about one gradient per frame) and
  CG iterations, up to the first logged iteration at the target;
* speed-up = baseline time to target / candidate time to target; also at a looser
  target, the converged CE plus ``slack`` (1%, AlgoPerf-style), which does not hinge
  on the last, flattest stretch of the baseline's curve;
* per run: total work (every example and CG iteration of the whole run), and the median
  CG iterations and CG seconds per HF iteration (the preconditioner's figure: Krylov
  iterations saved per solve);
* WER difference per decoded set (candidate - baseline, absolute %) with its 95%
  paired-bootstrap interval over utterances (Bisani & Ney 2004).

Across seeds the table gives the median and the min-max of the speed-up.  Runs that
did not converge by their stopping rule (``stop_reason`` not ``converged``) are flagged.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike


def read_log(exp_dir: Pathlike) -> list[dict]:
    path = Path(exp_dir) / "train_log.jsonl"
    if not path.is_file():
        raise DataError(str(path), "missing: not a finished training run")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise DataError(str(path), "empty training log")
    return rows


def time_to_target(rows: Sequence[dict], target: float) -> Optional[float]:
    """First wall time at which ``heldout_loss <= target`` (interpolated), or None."""
    prev = None
    for r in rows:
        loss, t = float(r["heldout_loss"]), float(r["wall_s"])
        if loss <= target:
            if prev is None or prev[1] <= target:
                return t
            t0, l0 = prev
            frac = (l0 - target) / (l0 - loss) if l0 != loss else 1.0
            return t0 + frac * (t - t0)
        prev = (t, loss)
    return None


#: cumulative HF work counters; ``examples_precond`` (the KFAC preconditioner's factor pass,
#: one forward+backward per curvature example) is absent (0) for the other variants
WORK_KEYS = ("opt_examples_grad", "opt_examples_curv", "opt_examples_precond", "opt_cg_iters_total")


def total_work(rows: Sequence[dict]) -> dict[str, float]:
    """The run's cumulative work counters at its last logged iteration."""
    last = rows[-1]
    return {k[len("opt_"):]: float(last.get(k) or 0.0) for k in WORK_KEYS}


def median_per_iteration(rows: Sequence[dict], key: str) -> Optional[float]:
    """Median over the run's HF iterations of a per-iteration statistic (e.g. ``opt_cg_iters``)."""
    vals = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def work_to_target(rows: Sequence[dict], target: float) -> Optional[dict[str, float]]:
    """Cumulative work counters at the first logged iteration with ``heldout_loss <= target``."""
    for r in rows:
        if float(r["heldout_loss"]) <= target:
            return {k[len("opt_"):]: float(r.get(k, 0.0)) for k in WORK_KEYS}
    return None


@dataclass
class Speedup:
    """One candidate run against one baseline run (the same seed)."""

    baseline: str
    candidate: str
    target_heldout_loss: float
    baseline_time_s: float
    candidate_time_s: Optional[float]
    speedup: Optional[float]
    candidate_final_heldout_loss: float
    wer: dict[str, dict[str, Any]]
    baseline_work: Optional[dict[str, float]] = None
    candidate_work: Optional[dict[str, float]] = None
    baseline_stop: str = ""
    candidate_stop: str = ""
    baseline_iters: int = 0
    candidate_iters: int = 0
    candidate_total_time_s: float = 0.0
    baseline_total_work: Optional[dict[str, float]] = None
    candidate_total_work: Optional[dict[str, float]] = None
    #: median over the run of CG iterations / CG seconds per HF iteration
    baseline_cg_iters: Optional[float] = None
    candidate_cg_iters: Optional[float] = None
    baseline_cg_s: Optional[float] = None
    candidate_cg_s: Optional[float] = None
    #: speed-up at target * (1 + slack)
    slack: float = 0.0
    slack_speedup: Optional[float] = None


def _summary(exp_dir: Path) -> dict[str, Any]:
    p = exp_dir / "train_summary.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _decode_dirs(exp_dir: Path) -> dict[str, Path]:
    return {p.parent.name[len("decode_"):]: p.parent for p in sorted(exp_dir.glob("decode_*/wer.json"))}


def compare_runs(
    baseline: Pathlike, candidate: Pathlike, target: Optional[float] = None, slack: float = 0.01
) -> Speedup:
    """Speed-up of ``candidate`` over ``baseline`` at ``target`` held-out loss (default:
    the baseline's final one, its converged loss when it stopped by convergence)."""
    from asr_hf.decode.significance import paired_bootstrap, utterance_errors

    b_dir, c_dir = Path(baseline), Path(candidate)
    b_rows, c_rows = read_log(b_dir), read_log(c_dir)
    target = float(b_rows[-1]["heldout_loss"]) if target is None else float(target)
    b_time = time_to_target(b_rows, target)
    c_time = time_to_target(c_rows, target)
    if b_time is None:
        raise DataError(str(b_dir), f"the baseline never reached the target held-out loss {target}")
    loose = target * (1.0 + slack)
    b_loose, c_loose = time_to_target(b_rows, loose), time_to_target(c_rows, loose)
    b_dec, c_dec = _decode_dirs(b_dir), _decode_dirs(c_dir)
    wer: dict[str, dict[str, Any]] = {}
    for s in sorted(set(b_dec) | set(c_dec)):
        b_w = json.loads((b_dec[s] / "wer.json").read_text()).get("wer_percent") if s in b_dec else None
        c_w = json.loads((c_dec[s] / "wer.json").read_text()).get("wer_percent") if s in c_dec else None
        entry: dict[str, Any] = {"baseline": b_w, "candidate": c_w, "diff": None, "ci": None, "p_improve": None}
        if b_w is not None and c_w is not None:
            entry["diff"] = c_w - b_w
            if (b_dec[s] / "hyp.txt").is_file() and (c_dec[s] / "hyp.txt").is_file():
                d = paired_bootstrap(utterance_errors(b_dec[s]), utterance_errors(c_dec[s]))
                entry.update(diff=d.diff, ci=list(d.ci), p_improve=d.p_improve)
        wer[s] = entry
    b_sum, c_sum = _summary(b_dir), _summary(c_dir)
    return Speedup(
        baseline=b_dir.name, candidate=c_dir.name, target_heldout_loss=target, baseline_time_s=b_time,
        candidate_time_s=c_time, speedup=(b_time / c_time) if c_time else None,
        candidate_final_heldout_loss=float(c_rows[-1]["heldout_loss"]), wer=wer,
        baseline_work=work_to_target(b_rows, target), candidate_work=work_to_target(c_rows, target),
        baseline_stop=b_sum.get("stop_reason", ""), candidate_stop=c_sum.get("stop_reason", ""),
        baseline_iters=len(b_rows) - 1, candidate_iters=len(c_rows) - 1,
        candidate_total_time_s=float(c_rows[-1]["wall_s"]),
        baseline_total_work=total_work(b_rows), candidate_total_work=total_work(c_rows),
        baseline_cg_iters=median_per_iteration(b_rows, "opt_cg_iters"),
        candidate_cg_iters=median_per_iteration(c_rows, "opt_cg_iters"),
        baseline_cg_s=median_per_iteration(b_rows, "opt_time_cg"),
        candidate_cg_s=median_per_iteration(c_rows, "opt_time_cg"),
        slack=slack, slack_speedup=(b_loose / c_loose) if (b_loose is not None and c_loose) else None,
    )  # fmt: skip


def _work(w: Optional[dict[str, float]]) -> Optional[float]:
    return None if w is None else w["examples_grad"] + w["examples_curv"] + w.get("examples_precond", 0.0)


def _pair(a: Optional[float], b: Optional[float], fmt: str, scale: float = 1.0) -> str:
    return " / ".join("-" if v is None else fmt.format(v * scale) for v in (a, b))


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def speedup_table(results: Sequence[Speedup]) -> str:
    """Markdown table of :func:`compare_runs` results, one row per (candidate, seed)."""
    sets = sorted({s for r in results for s in r.wer})
    slack = max((r.slack for r in results), default=0.0)
    head = ["baseline", "candidate", "target CE", "baseline s", "candidate s", "speed-up",
            f"speed-up at CE +{100 * slack:g}%", "work ratio",
            "cand. final CE", "iters base / cand", "stop base / cand", "CG its / HF it base / cand",
            "CG s / HF it base / cand", "total examples (M) base / cand"]  # fmt: skip
    head += [f"{s} WER base / cand, diff [95% CI]" for s in sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        bw, cw = _work(r.baseline_work), _work(r.candidate_work)
        cells = [r.baseline, r.candidate, f"{r.target_heldout_loss:.4f}", f"{r.baseline_time_s:.1f}",
                 "not reached" if r.candidate_time_s is None else f"{r.candidate_time_s:.1f}",
                 "-" if r.speedup is None else f"{r.speedup:.2f}x",
                 "-" if r.slack_speedup is None else f"{r.slack_speedup:.2f}x",
                 "-" if not (bw and cw) else f"{bw / cw:.2f}x", f"{r.candidate_final_heldout_loss:.4f}",
                 f"{r.baseline_iters} / {r.candidate_iters}", f"{r.baseline_stop or '-'} / {r.candidate_stop or '-'}",
                 _pair(r.baseline_cg_iters, r.candidate_cg_iters, "{:.0f}"), _pair(r.baseline_cg_s, r.candidate_cg_s, "{:.2f}"),
                 _pair(_work(r.baseline_total_work), _work(r.candidate_total_work), "{:.1f}", 1e-6)]  # fmt: skip
        for s in sets:
            w = r.wer.get(s, {})
            if w.get("baseline") is None or w.get("candidate") is None:
                cells.append("-")
                continue
            ci = f" [{w['ci'][0]:+.2f}, {w['ci'][1]:+.2f}]" if w.get("ci") else ""
            cells.append(f"{w['baseline']:.2f} / {w['candidate']:.2f}, {w['diff']:+.2f}{ci}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_SEED_SUFFIX = re.compile(r"^(?P<name>.+?)(?:_s(?P<seed>\d+))?$")


@dataclass
class SeedSummary:
    """Median and range over seeds of one candidate's speed-ups."""

    candidate: str
    seeds: int
    reached: int
    median_speedup: Optional[float]
    min_speedup: Optional[float]
    max_speedup: Optional[float]
    median_work_ratio: Optional[float]
    #: median over seeds of (baseline / candidate) median CG iterations and CG seconds per HF iteration
    median_cg_iters_ratio: Optional[float] = None
    median_cg_s_ratio: Optional[float] = None
    slack: float = 0.0
    slack_reached: int = 0
    slack_speedups: list[float] = field(default_factory=list)  # per seed, a miss as 0
    wer_diff: dict[str, list[float]] = field(default_factory=dict)


def runs_by_seed(exp_root: Pathlike, optimizer: str) -> dict[int, Path]:
    """``exp/dnn_<optimizer>`` (seed 0) and ``exp/dnn_<optimizer>_s<k>`` (seed k)."""
    out: dict[int, Path] = {}
    for d in sorted(Path(exp_root).glob(f"dnn_{optimizer}*")):
        m = _SEED_SUFFIX.match(d.name)
        if m and m.group("name") == f"dnn_{optimizer}" and (d / "train_log.jsonl").is_file():
            out[int(m.group("seed") or 0)] = d
    return out


def compare_seeds(
    exp_root: Pathlike, baseline: str, candidates: Sequence[str], target: Optional[float] = None, slack: float = 0.01
) -> tuple[list[Speedup], list[SeedSummary]]:
    """Every candidate seed against the baseline run of the same seed (at ``target``, or
    at each baseline seed's final held-out loss)."""
    base = runs_by_seed(exp_root, baseline)
    if not base:
        raise DataError(str(exp_root), f"no run exp/dnn_{baseline}[_s<seed>] with a train_log.jsonl")
    results, summaries = [], []
    for cand in candidates:
        runs = runs_by_seed(exp_root, cand)
        rs = [compare_runs(base[s], runs[s], target, slack) for s in sorted(runs) if s in base]
        if not rs:
            continue
        results += rs
        ups = [r.speedup if r.speedup is not None else 0.0 for r in rs]  # a miss is infinitely slow
        works = [(_work(r.baseline_work) or 0) / _work(r.candidate_work) for r in rs if _work(r.candidate_work)]
        diffs: dict[str, list[float]] = {}
        for r in rs:
            for s, w in r.wer.items():
                if w.get("diff") is not None:
                    diffs.setdefault(s, []).append(w["diff"])
        cg_its = [x for x in (_ratio(r.baseline_cg_iters, r.candidate_cg_iters) for r in rs) if x is not None]
        cg_s = [x for x in (_ratio(r.baseline_cg_s, r.candidate_cg_s) for r in rs) if x is not None]
        loose = [r.slack_speedup if r.slack_speedup is not None else 0.0 for r in rs]
        summaries.append(SeedSummary(
            candidate=cand, seeds=len(rs), reached=sum(r.speedup is not None for r in rs),
            median_speedup=statistics.median(ups), min_speedup=min(ups), max_speedup=max(ups),
            median_work_ratio=statistics.median(works) if works else None, wer_diff=diffs,
            median_cg_iters_ratio=statistics.median(cg_its) if cg_its else None,
            median_cg_s_ratio=statistics.median(cg_s) if cg_s else None,
            slack=rs[0].slack, slack_reached=sum(r.slack_speedup is not None for r in rs), slack_speedups=loose,
        ))  # fmt: skip
    return results, summaries


def _spread(v: Sequence[float]) -> str:
    return "-" if not v else f"{statistics.median(v):.2f}x [{min(v):.2f}, {max(v):.2f}]"


def seed_table(summaries: Sequence[SeedSummary]) -> str:
    sets = sorted({s for m in summaries for s in m.wer_diff})
    slack = max((m.slack for m in summaries), default=0.0)
    head = ["candidate", "seeds", "reached target", "speed-up median [min, max]",
            f"reached CE +{100 * slack:g}%", f"speed-up at CE +{100 * slack:g}% median [min, max]", "work ratio median",
            "CG its / HF it ratio", "CG s / HF it ratio"]
    head += [f"{s} WER diff median [min, max]" for s in sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in summaries:
        cells = [m.candidate, str(m.seeds), f"{m.reached}/{m.seeds}",
                 f"{m.median_speedup:.2f}x [{m.min_speedup:.2f}, {m.max_speedup:.2f}]",
                 f"{m.slack_reached}/{m.seeds}", _spread(m.slack_speedups),
                 "-" if m.median_work_ratio is None else f"{m.median_work_ratio:.2f}x",
                 "-" if m.median_cg_iters_ratio is None else f"{m.median_cg_iters_ratio:.2f}x",
                 "-" if m.median_cg_s_ratio is None else f"{m.median_cg_s_ratio:.2f}x"]  # fmt: skip
        for s in sets:
            v = m.wer_diff.get(s)
            cells.append("-" if not v else f"{statistics.median(v):+.2f} [{min(v):+.2f}, {max(v):+.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(results: Sequence[Speedup], summaries: Sequence[SeedSummary] = ()) -> str:
    return json.dumps({"runs": [asdict(r) for r in results], "summary": [asdict(m) for m in summaries]})
