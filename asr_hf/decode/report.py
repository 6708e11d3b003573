"""Decode directories and the results table across an experiment tree.

Each decode directory ``exp/<system>/decode_<set>/`` holds:

``wer.json``
    machine-readable result: ``system``, ``set``, ``wer_percent``,
    ``ser_percent``, the counts (``ref_words``, ``correct``, ``substitutions``,
    ``deletions``, ``insertions``, ``errors``, ``sentences``,
    ``sentence_errors``), ``missing_hyps``, ``per_speaker``, the decoding
    settings (``acwt``, ``lmwt`` = 1/acwt, ``acwt_source``, ``sweep`` when the
    acoustic weight was tuned, ``decode`` = :class:`DecodeConfig`), and timing
    (``frames``, ``audio_s``, ``search_s``, ``matrix_s``, ``wall_s``,
    ``rtf_search``, ``rtf_total`` = seconds per second of audio on one core).
``summary.txt``
    the same for people: Kaldi's ``%WER`` / ``%SER`` lines and the per-speaker table.
``per_utt.txt``
    Kaldi ``per_utt`` alignments (ref / hyp / op / #csid per utterance).
``hyp.txt``, ``ref.txt``
    Kaldi ``text`` files of the hypotheses and references.

Training metadata comes from ``exp/<system>/train_summary.json`` when present,
written by the training stages with these optional keys::

    {"optimizer": "hf", "train_wall_s": 5231.4, "device": "cuda:0 (H100)",
     "num_params": 6312345, "epochs": 12}

:func:`collect_results` finds every ``wer.json`` under an exp tree and
:func:`compare_table` prints them as a markdown table (one row per system,
one WER column per set); :func:`plot_results` draws a grouped bar chart.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from asr_hf.decode.scoring import ScoreResult, format_speaker_table, write_alignments, write_text
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, mark_done

log = logging.getLogger(__name__)

WER_JSON = "wer.json"
SUMMARY_TXT = "summary.txt"
TRAIN_SUMMARY = "train_summary.json"


def write_decode_dir(
    decode_dir: Pathlike,
    result: ScoreResult,
    hyps: Mapping[str, Sequence[str]],
    refs: Mapping[str, Sequence[str]],
    meta: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Write a scored decode directory (see the module docstring) and mark it done.

    Args:
        decode_dir: ``exp/<system>/decode_<set>``.
        result: the scoring of ``hyps`` against ``refs``.
        hyps / refs: utterance id -> words.
        meta: extra ``wer.json`` fields (decoding settings, timing, sweep, ...).

    Returns:
        The ``wer.json`` content.
    """
    d = Path(decode_dir)
    d.mkdir(parents=True, exist_ok=True)
    system, dset = system_and_set(d)
    record: dict[str, Any] = {"system": system, "set": dset, **result.to_json(), **(meta or {})}
    write_text(hyps, d / "hyp.txt")
    write_text(refs, d / "ref.txt")
    write_alignments(result, d / "per_utt.txt")
    with atomic_output(d / SUMMARY_TXT) as tmp:
        tmp.write_text(format_summary(record, result), encoding="utf-8")
    with atomic_output(d / WER_JSON) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    mark_done(d)
    log.info("%s: %s", d, result.total.summary().replace("\n", "; "))
    return record


def system_and_set(decode_dir: Path) -> tuple[str, str]:
    """``exp/tri1/decode_dev`` -> ``("tri1", "dev")`` (set = the name after ``decode_``)."""
    name = decode_dir.name
    dset = name[len("decode_") :] if name.startswith("decode_") else name
    return decode_dir.resolve().parent.name, dset


def format_summary(record: Mapping[str, Any], result: ScoreResult) -> str:
    """The human-readable ``summary.txt``."""
    lines = [f"system {record['system']}  set {record['set']}", result.total.summary()]
    if result.missing:
        n = len(result.missing)
        lines.append(f"{n} reference(s) without hypothesis (scored as deletions): {result.missing[:5]}")
    if "acwt" in record:
        src = record.get("acwt_source", "")
        a = record["acwt"]
        lines.append(f"acoustic weight {a:g} (LM weight {1 / a:.3g}){' ' + src if src else ''}")
    if record.get("sweep"):
        lines.append("acoustic-weight sweep:")
        for s in record["sweep"]:
            wer = "-" if s["wer_percent"] is None else f"{s['wer_percent']:.2f}"
            lines.append(f"  acwt {s['acwt']:<8g} lmwt {1 / s['acwt']:<7.3g} %WER {wer}")
    if record.get("rtf_total") is not None:
        lines.append(
            f"real-time factor per core: search {record['rtf_search']:.4f}, total {record['rtf_total']:.4f} "
            f"({record.get('frames', 0)} frames)"
        )
    lines += ["", "per speaker:", format_speaker_table(result)]
    return "\n".join(lines) + "\n"


def read_wer(decode_dir: Pathlike) -> dict[str, Any]:
    """The ``wer.json`` of a decode directory."""
    path = Path(decode_dir) / WER_JSON
    if not path.is_file():
        raise DataError(str(decode_dir), f"no {WER_JSON}: not a scored decode directory")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- compare


@dataclass
class ResultRow:
    """One scored decode directory plus the training metadata of its system."""

    system: str
    set: str
    wer_percent: Optional[float]
    ser_percent: Optional[float]
    ref_words: int
    acwt: Optional[float]
    decode_dir: str
    optimizer: Optional[str] = None
    train_wall_s: Optional[float] = None
    device: Optional[str] = None
    num_params: Optional[int] = None
    heldout_loss: Optional[float] = None
    heldout_acc: Optional[float] = None
    world_size: Optional[int] = None
    wer_ci: Optional[tuple[float, float]] = None  # 95% bootstrap interval over utterances


def collect_results(exp_root: Pathlike) -> list[ResultRow]:
    """Every ``*/decode_*/wer.json`` under ``exp_root``; system = the exp dir's path relative to it."""
    root = Path(exp_root)
    if not root.is_dir():
        raise DataError(str(root), "no such directory")
    rows = []
    for wer_path in sorted(root.rglob(f"decode_*/{WER_JSON}")):
        decode_dir = wer_path.parent
        system_dir = decode_dir.parent
        rec = json.loads(wer_path.read_text())
        train: dict[str, Any] = {}
        if (system_dir / TRAIN_SUMMARY).is_file():
            train = json.loads((system_dir / TRAIN_SUMMARY).read_text())
        rows.append(
            ResultRow(
                system=str(system_dir.relative_to(root)) if system_dir != root else system_dir.name,
                set=system_and_set(decode_dir)[1],
                wer_percent=rec.get("wer_percent"),
                ser_percent=rec.get("ser_percent"),
                ref_words=int(rec.get("ref_words", 0)),
                acwt=rec.get("acwt"),
                decode_dir=str(decode_dir),
                optimizer=train.get("optimizer"),
                train_wall_s=train.get("train_wall_s"),
                device=train.get("device"),
                num_params=train.get("num_params"),
                heldout_loss=train.get("heldout_loss"),
                heldout_acc=train.get("heldout_acc"),
                world_size=train.get("world_size"),
                wer_ci=_wer_ci(decode_dir),
            )
        )
    return rows


def _wer_ci(decode_dir: Path) -> Optional[tuple[float, float]]:
    from asr_hf.decode.significance import bootstrap_wer_ci, utterance_errors

    if not (decode_dir / "hyp.txt").is_file() or not (decode_dir / "ref.txt").is_file():
        return None
    ue = utterance_errors(decode_dir)
    return bootstrap_wer_ci(ue) if ue.ids else None


def _is_gmm(row: ResultRow) -> bool:
    return row.optimizer is None


def paired_table(rows: Sequence[ResultRow], against: Optional[str] = None) -> str:
    """Markdown: per set, every system's WER difference to a reference system with its
    95% paired-bootstrap interval and probability of improvement (Bisani & Ney 2004).
    The reference is ``against`` or, per set, the GMM system with the lowest WER."""
    from asr_hf.decode.significance import paired_bootstrap, utterance_errors

    lines = []
    for dset in _sets_in_order(rows):
        in_set = [r for r in rows if r.set == dset and r.wer_percent is not None]
        if len(in_set) < 2:  # e.g. a SAT system's first pass (decode_dev.si): nothing to pair with
            continue
        if against is not None:
            refs = [r for r in in_set if r.system == against]
        else:
            refs = sorted((r for r in in_set if _is_gmm(r)), key=lambda r: r.wer_percent)[:1]
        if not refs:
            continue
        ref = refs[0]
        ref_ue = utterance_errors(ref.decode_dir)
        lines += [f"\n**{dset}**: WER difference to `{ref.system}` ({ref.wer_percent:.2f}%), "
                  "system minus reference, 95% paired-bootstrap interval\n",
                  "| system | %WER | difference | 95% CI | P(better) | relative |", "|---|---:|---:|---|---:|---:|"]  # fmt: skip
        for r in sorted(in_set, key=lambda r: r.wer_percent):
            if r.system == ref.system:
                continue
            d = paired_bootstrap(ref_ue, utterance_errors(r.decode_dir))
            rel = 100.0 * d.diff / d.wer_a if d.wer_a else float("nan")
            lines.append(f"| {r.system} | {r.wer_percent:.2f} | {d.diff:+.2f} | [{d.ci[0]:+.2f}, {d.ci[1]:+.2f}] "
                         f"| {d.p_improve:.3f} | {rel:+.1f}% |")  # fmt: skip
    return "\n".join(lines).lstrip("\n") + "\n" if lines else ""


LADDER = ("mono", "tri1", "tri2", "tri3")  # Kaldi's GMM ladder, in training order
SGD_BASELINE = "dnn_sgd"  # the recipes' first-order reference DNN (Kaldi nnet1's SGD with newbob)


def ladder_table(rows: Sequence[ResultRow]) -> str:
    """Markdown: each step of the GMM ladder (mono -> tri1 -> tri2 -> tri3, the ones
    present) and the best DNN against the best GMM, per set: the WER difference with its
    95% paired-bootstrap interval and whether it is resolved (the interval excludes 0)."""
    from asr_hf.decode.significance import paired_bootstrap, utterance_errors

    lines = []
    chosen = best_gmm_and_dnn(rows)
    for dset in ("dev", "test"):
        by_sys = {r.system: r for r in rows if r.set == dset and r.wer_percent is not None}
        steps = [s for s in LADDER if s in by_sys]
        pairs = list(zip(steps, steps[1:]))
        if chosen and all(s in by_sys for s in chosen):
            pairs.append(chosen)
        if not pairs:
            continue
        if not lines:
            lines += ["| set | step | %WER before -> after | difference | 95% CI | relative | resolved |",
                      "|---|---|---|---:|---|---:|---|"]  # fmt: skip
        for a, b in pairs:
            d = paired_bootstrap(utterance_errors(by_sys[a].decode_dir), utterance_errors(by_sys[b].decode_dir))
            rel = 100.0 * d.diff / d.wer_a if d.wer_a else float("nan")
            ok = "yes, better" if d.ci[1] < 0 else "yes, worse" if d.ci[0] > 0 else "no"
            lines.append(f"| {dset} | {a} -> {b} | {d.wer_a:.2f} -> {d.wer_b:.2f} | {d.diff:+.2f} | "
                         f"[{d.ci[0]:+.2f}, {d.ci[1]:+.2f}] | {rel:+.1f}% | {ok} |")  # fmt: skip
    return "\n".join(lines) + "\n" if lines else ""


def best_gmm_and_dnn(rows: Sequence[ResultRow]) -> Optional[tuple[str, str]]:
    """The best GMM of the ladder and the best DNN, both chosen on dev (as an acoustic
    weight is), or on test when there is no dev; None without both kinds of system."""
    for dset in ("dev", "test"):
        by_sys = {r.system: r for r in rows if r.set == dset and r.wer_percent is not None}
        gmms = [s for s in LADDER if s in by_sys]
        dnns = [r for r in by_sys.values() if not _is_gmm(r)]
        if gmms and dnns:
            return (min(gmms, key=lambda s: by_sys[s].wer_percent), min(dnns, key=lambda r: r.wer_percent).system)
    return None


def _sets_in_order(rows: Sequence[ResultRow]) -> list[str]:
    found = {r.set for r in rows}
    return [s for s in ("dev", "test") if s in found] + sorted(found - {"dev", "test"})


def _fmt_time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _fmt_params(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else str(n)


def _fmt_wer(row: Optional[ResultRow]) -> str:
    if row is None or row.wer_percent is None:
        return "-"
    if row.wer_ci is None:
        return f"{row.wer_percent:.2f}"
    return f"{row.wer_percent:.2f} [{row.wer_ci[0]:.2f}, {row.wer_ci[1]:.2f}]"


def compare_table(rows: Sequence[ResultRow]) -> str:
    """A markdown table: system, optimizer, %WER per set with its 95% bootstrap interval
    (``[lo, hi]``, utterances resampled), held-out frame cross-entropy and accuracy,
    training time, parameters, device (``xN`` for an N-process run)."""
    sets = _sets_in_order(rows)
    systems: dict[str, dict[str, ResultRow]] = {}
    for r in rows:
        systems.setdefault(r.system, {})[r.set] = r
    head = ["system", "optimizer", *[f"{s} %WER" for s in sets], "held-out CE", "held-out acc %", "train time",
            "params", "device"]  # fmt: skip
    align = ["---"] * 2 + ["---:"] * (len(sets) + 4) + ["---"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for system in sorted(systems):
        by_set = systems[system]
        any_row = next(iter(by_set.values()))
        wers = [_fmt_wer(by_set.get(s)) for s in sets]
        device = any_row.device or "-"
        if any_row.world_size and any_row.world_size > 1:
            device += f" x{any_row.world_size}"
        cells = [
            system,
            any_row.optimizer or "-",
            *wers,
            f"{any_row.heldout_loss:.3f}" if any_row.heldout_loss is not None else "-",
            f"{100 * any_row.heldout_acc:.1f}" if any_row.heldout_acc is not None else "-",
            _fmt_time(any_row.train_wall_s),
            _fmt_params(any_row.num_params),
            device,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save_figure(fig, out: Pathlike) -> Path:
    """Write a matplotlib figure atomically (format from the suffix, png by default) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=120, format=out.suffix.lstrip(".") or "png")
    plt.close(fig)
    return out


def plot_training_curves(exp_root: Pathlike, out: Pathlike) -> Optional[Path]:
    """Held-out cross-entropy and frame accuracy vs training wall time, one line per DNN
    system (every ``*/train_log.jsonl`` under ``exp_root``); ``None`` when there is none."""
    curves = []
    for path in sorted(Path(exp_root).glob("*/train_log.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "wall_s" in r and "heldout_loss" in r]  # DNN logs only (not GMM ones)
        if rows:
            curves.append((path.parent.name, rows))
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ce, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, rows in curves:
        t = [r["wall_s"] for r in rows]
        ax_ce.plot(t, [r["heldout_loss"] for r in rows], marker=".", label=name)
        ax_acc.plot(t, [100 * r.get("heldout_acc", float("nan")) for r in rows], marker=".", label=name)
    for ax, label in ((ax_ce, "held-out cross-entropy"), (ax_acc, "held-out frame accuracy %")):
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)
    return _save_figure(fig, out)


def plot_results(rows: Sequence[ResultRow], out: Pathlike, title: str = "%WER by system") -> Path:
    """Grouped bar chart of %WER (one group per system, one bar per set) saved to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sets = _sets_in_order(rows)
    systems = sorted({r.system for r in rows})
    wer = {(r.system, r.set): r.wer_percent for r in rows}
    x = np.arange(len(systems))
    width = 0.8 / max(len(sets), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(systems) + 2), 3.5))
    for i, s in enumerate(sets):
        vals = [wer.get((sy, s)) for sy in systems]
        heights = [v if v is not None else 0.0 for v in vals]
        bars = ax.bar(x + (i - (len(sets) - 1) / 2) * width, heights, width, label=s)
        for b, v in zip(bars, vals):
            if v is not None:
                xy = (b.get_x() + b.get_width() / 2, b.get_height())
                ax.annotate(f"{v:.1f}", xy, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(systems, rotation=30, ha="right")
    ax.set_ylabel("%WER")
    ax.set_title(title)
    ax.legend()
    return _save_figure(fig, out)


def commands_section(exp_root: Pathlike) -> str:
    """The recipe invocations (``exp/commands.log``) and each DNN's exact training command."""
    root = Path(exp_root)
    parts = []
    if (root / "commands.log").is_file():
        parts.append((root / "commands.log").read_text().rstrip())
    for p in sorted(root.glob("*/command.txt")):
        parts.append(p.read_text().rstrip())
    if not parts:
        return ""
    return ("## Commands\n\nRecipe invocations (exp/commands.log) and each DNN's exact training command:\n\n```\n"
            + "\n".join(parts) + "\n```\n")  # fmt: skip


def _run_setup(run_dir: Path) -> tuple[str, str]:
    """What a speed-up comparison must hold fixed: the run's optimizer, and its training data
    and model (``config.yaml``'s ``data`` and ``model``, as JSON); ``("", "")`` without a config."""
    import yaml

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        return "", ""
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    optimizer = str((cfg.get("optim") or {}).get("name", ""))
    return optimizer, json.dumps({"data": cfg.get("data"), "model": cfg.get("model")}, sort_keys=True)


def hf_speedup_section(exp_root: Pathlike, baseline: str = "hf") -> str:
    """The papers' headline (``asr-hf speedup``) for every HF variant under ``exp_root``
    that has a baseline run of the same seed, data and model; empty when there is none.

    Runs on other data or another model (``exp/dnn_<opt>_sp[_<tag>]``: the recipes'
    ``--speed-perturb`` / ``--dnn-tag``) are compared with the ``baseline`` run of their own
    setup (``dnn_hf_sp``), in a section of their own, never with the default one."""
    from asr_hf.nnet.speedup import _SEED_SUFFIX, runs_by_seed

    root = Path(exp_root)
    # dnn_<name>[_s<seed>] -> <name>: the glob keeps every name starting with "hf"
    names = sorted({_SEED_SUFFIX.match(d.name).group("name")[len("dnn_"):]
                    for d in root.glob("dnn_hf*") if (d / "train_log.jsonl").is_file()})  # fmt: skip
    groups: dict[str, list[str]] = {}  # data and model -> the HF names trained on them
    optimizer = {}
    for name in names:
        runs = runs_by_seed(root, name)
        if runs:
            optimizer[name], setup = _run_setup(runs[min(runs)])
            groups.setdefault(setup, []).append(name)
    sections = []
    for setup, members in groups.items():
        # the group's baseline: the shortest name run with the baseline optimizer (dnn_hf,
        # dnn_hf_sp), or without configs, the run named after it
        bases = [n for n in members if (optimizer[n] == baseline if setup else n == baseline)]
        if not bases:
            continue
        base = min(bases, key=len)
        cands = [n for n in members if n != base]
        if cands:
            sections.append((base != baseline, base, _speedup_markdown(root, base, cands)))
    return "\n".join(md for _, _, md in sorted(sections))


def _speedup_markdown(root: Path, baseline: str, names: Sequence[str]) -> str:
    from asr_hf.nnet.speedup import compare_seeds, seed_table, speedup_table

    results, summaries = compare_seeds(root, baseline, names)
    head = (
        f"## HF speed-up at baseline `{baseline}`'s final held-out cross-entropy\n\n"
        "The target is the baseline's final held-out CE: its converged CE where the stop column says "
        "`converged`. Speed-up = baseline time to target / candidate time to target (a miss counts as 0x), also "
        "at the looser target CE + 1% (AlgoPerf-style: not decided by the flattest end of the baseline's curve); "
        "work ratio = baseline / candidate gradient + curvature (+ KFAC factor-pass) examples to the target; "
        "CG its (s) / HF it = "
        "median over the run of CG iterations (seconds) per HF iteration, its ratio baseline / candidate (> 1: "
        "the candidate's solves are shorter); total examples = the same examples over the whole run; "
        "WER differences with 95% paired-bootstrap intervals.\n\n"
    )
    return head + seed_table(summaries) + "\nPer seed:\n\n" + speedup_table(results)


def speakers_section(rows: Sequence[ResultRow], set_name: str = "test") -> str:
    """Markdown: per-speaker WER of the best system (the best DNN chosen on dev, else the
    lowest WER on ``set_name``), with the
    pooled WER, the mean over speakers and how far the worst speaker is from them."""
    cands = [r for r in rows if r.set == set_name and r.wer_percent is not None]
    if not cands:
        return ""
    chosen = best_gmm_and_dnn(rows)  # the best DNN chosen on dev, as in the ladder
    on_dev = next((r for r in cands if chosen and r.system == chosen[1]), None)
    best = on_dev or min(cands, key=lambda r: r.wer_percent)
    per = read_wer(best.decode_dir).get("per_speaker") or {}
    wers = {s: c["wer_percent"] for s, c in per.items() if c.get("wer_percent") is not None}
    if not wers:
        return ""
    mean = sum(wers.values()) / len(wers)
    worst = max(wers, key=wers.get)
    best_spk = min(wers, key=wers.get)
    lines = [
        f"## Held-out speakers ({set_name}, best system `{best.system}`"
        f"{', the best DNN chosen on dev' if on_dev else ''})\n",
        f"{len(wers)} speakers, none seen in training. Pooled %WER {best.wer_percent:.2f}; mean over speakers "
        f"{mean:.2f}; best speaker `{best_spk}` {wers[best_spk]:.2f}; worst speaker `{worst}` {wers[worst]:.2f} "
        f"(+{wers[worst] - mean:.2f} over the mean, {wers[worst] / max(mean, 1e-9):.2f}x).\n",
        "| speaker | words | %WER |",
        "|---|---:|---:|",
    ]
    lines += [f"| {s} | {per[s]['ref_words']} | {wers[s]:.2f} |" for s in sorted(wers, key=wers.get)]
    return "\n".join(lines)


def sweeps_section(rows: Sequence[ResultRow]) -> str:
    """Markdown: every system's acoustic-weight sweep on dev (WER per weight, the chosen
    weight in bold, whether the sweep had to extend itself) and the weight test used."""
    lines = []
    test_acwt = {r.system: r.acwt for r in rows if r.set == "test"}
    for r in sorted((r for r in rows if r.set == "dev"), key=lambda r: r.system):
        rec = read_wer(r.decode_dir)
        sweep = rec.get("sweep") or []
        if not sweep:
            continue
        cells = ", ".join(
            (f"**{p['acwt']:g}: {p['wer_percent']:.2f}**" if p["acwt"] == rec.get("acwt") else
             f"{p['acwt']:g}: {p['wer_percent']:.2f}") if p.get("wer_percent") is not None else f"{p['acwt']:g}: -"
            for p in sorted(sweep, key=lambda p: p["acwt"])
        )  # fmt: skip
        note = []
        if rec.get("sweep_extended"):
            note.append(f"extended {rec['sweep_extended']}x")
        if rec.get("sweep_best_at_edge"):
            note.append("best still at an edge")
        t = test_acwt.get(r.system)
        lines.append(f"| {r.system} | {cells} | {'; '.join(note) or '-'} | {t:g} |" if t is not None else
                     f"| {r.system} | {cells} | {'; '.join(note) or '-'} | - |")  # fmt: skip
    if not lines:
        return ""
    head = ["## Acoustic-weight sweeps (dev %WER per acwt; chosen in bold, then used on test)\n",
            "| system | dev sweep | note | test acwt |", "|---|---|---|---:|"]  # fmt: skip
    return "\n".join(head + lines)


def stage_times_section(exp_root: Pathlike) -> str:
    """Markdown: wall time per recipe stage from ``exp/stage_times.tsv`` (lines
    ``start_epoch end_epoch stage description``, appended by recipes/common/pipeline.sh);
    re-runs of a stage add up."""
    path = Path(exp_root) / "stage_times.tsv"
    if not path.is_file():
        return ""
    per: dict[str, list] = {}
    first, last = None, None
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        try:
            t0, t1 = float(parts[0]), float(parts[1])
        except ValueError:
            continue
        first = t0 if first is None else min(first, t0)
        last = t1 if last is None else max(last, t1)
        per.setdefault(parts[2], [parts[3], 0.0])[1] += t1 - t0
    if not per:
        return ""
    total = sum(v[1] for v in per.values())
    lines = ["## Wall time per stage\n", f"Sum of stage times {_fmt_time(total)} (h:mm:ss).\n",
             "| stage | what | wall time |", "|---|---|---:|"]  # fmt: skip
    for stage in sorted(per, key=lambda k: (len(k), k)):
        lines.append(f"| {stage} | {per[stage][0]} | {_fmt_time(per[stage][1])} |")
    return "\n".join(lines)


def results_markdown(exp_root: Pathlike, title: str = "Results", paired_against: Optional[str] = None,
                     words_txt: Optional[Pathlike] = None) -> str:
    """The whole ``RESULTS.md`` of a recipe: the system table with WER intervals, the
    paired differences, the HF speed-up section and the commands; with the recognition
    vocabulary (``words_txt``) also the errors at out-of-vocabulary words."""
    rows = collect_results(exp_root)
    if not rows:
        raise DataError(str(exp_root), "no decode_*/wer.json found")
    out = [f"# {title}\n", "%WER with 95% bootstrap intervals over utterances (Bisani & Ney 2004).\n",
           compare_table(rows)]  # fmt: skip
    ladder = ladder_table(rows)
    if ladder:
        out += ["\n## The ladder, step by step (paired differences; the last row: the best DNN against the best GMM, "
                "both chosen on dev)\n", ladder]
    paired = paired_table(rows, paired_against)
    if paired:
        out += ["\n## Paired differences\n", paired]
    sgd = [r for r in rows if r.system == SGD_BASELINE]
    if sgd and paired_against != SGD_BASELINE:
        dnns = paired_table([r for r in rows if not _is_gmm(r)], SGD_BASELINE)
        if dnns:
            out += [f"\n## Every DNN against `{SGD_BASELINE}` (Kaldi nnet1's SGD-newbob, each at its own convergence)\n",
                    dnns]  # fmt: skip
    if words_txt is not None:
        from asr_hf.decode.oov import oov_markdown, read_vocabulary

        out += ["\n" + oov_markdown(rows, read_vocabulary(words_txt), best_gmm_and_dnn(rows))]
    for section in (speakers_section(rows), sweeps_section(rows), hf_speedup_section(exp_root),
                    stage_times_section(exp_root),
                    commands_section(exp_root)):
        if section:
            out += ["\n" + section]
    return "\n".join(out)
