"""The papers' headline measurement: time-to-target held-out loss between two runs.

Sainath et al. (2013) report how much faster HF with L-BFGS preconditioning and
geometric sampling reaches the held-out cross-entropy that baseline HF ends
with (1.5x on BN-50, 2.3x on SWB-300), and that WER does not suffer.  Given
two training exp dirs (their ``train_log.jsonl`` and decode dirs) this
computes the same figures:

* target = the baseline's final held-out cross-entropy;
* time to target = training wall time at which a run's held-out loss first
  reaches the target, linearly interpolated between logged iterations;
* speed-up = baseline time to target / candidate time to target;
* WER difference per decoded set (candidate - baseline, absolute %).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

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


@dataclass
class Speedup:
    baseline: str
    candidate: str
    target_heldout_loss: float
    baseline_time_s: float
    candidate_time_s: Optional[float]
    speedup: Optional[float]
    candidate_final_heldout_loss: float
    wer: dict[str, dict[str, Optional[float]]]


def _wers(exp_dir: Path) -> dict[str, float]:
    out = {}
    for p in sorted(exp_dir.glob("decode_*/wer.json")):
        out[p.parent.name[len("decode_"):]] = json.loads(p.read_text()).get("wer_percent")
    return out


def compare_runs(baseline: Pathlike, candidate: Pathlike) -> Speedup:
    """Speed-up of ``candidate`` over ``baseline`` at the baseline's final held-out loss."""
    b_dir, c_dir = Path(baseline), Path(candidate)
    b_rows, c_rows = read_log(b_dir), read_log(c_dir)
    target = float(b_rows[-1]["heldout_loss"])
    b_time = time_to_target(b_rows, target)
    c_time = time_to_target(c_rows, target)
    assert b_time is not None
    b_wer, c_wer = _wers(b_dir), _wers(c_dir)
    wer = {
        s: {"baseline": b_wer.get(s), "candidate": c_wer.get(s),
            "diff": (c_wer[s] - b_wer[s]) if s in b_wer and s in c_wer else None}
        for s in sorted(set(b_wer) | set(c_wer))
    }  # fmt: skip
    return Speedup(
        baseline=b_dir.name, candidate=c_dir.name, target_heldout_loss=target, baseline_time_s=b_time,
        candidate_time_s=c_time, speedup=(b_time / c_time) if c_time else None,
        candidate_final_heldout_loss=float(c_rows[-1]["heldout_loss"]), wer=wer,
    )  # fmt: skip


def speedup_table(results: Sequence[Speedup]) -> str:
    """Markdown table of :func:`compare_runs` results."""
    sets = sorted({s for r in results for s in r.wer})
    head = ["baseline", "candidate", "target held-out CE", "baseline s", "candidate s", "speed-up"]
    head += [f"{s} WER base / cand (diff)" for s in sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.baseline, r.candidate, f"{r.target_heldout_loss:.4f}", f"{r.baseline_time_s:.1f}",
                 "not reached" if r.candidate_time_s is None else f"{r.candidate_time_s:.1f}",
                 "-" if r.speedup is None else f"{r.speedup:.2f}x"]  # fmt: skip
        for s in sets:
            w = r.wer.get(s, {})
            if w.get("baseline") is None or w.get("candidate") is None:
                cells.append("-")
            else:
                cells.append(f"{w['baseline']:.2f} / {w['candidate']:.2f} ({w['diff']:+.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(results: Sequence[Speedup]) -> str:
    return json.dumps([asdict(r) for r in results])
