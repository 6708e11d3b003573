"""Decode a set, score it, write its decode dir; tune the acoustic weight on dev.

Kaldi's practice is to pick the LM weight on the dev set from lattices and use
it on test.  The kaldi-hmm-gmm bindings return only the best path, so the
sweep re-decodes: every dev matrix is decoded once per acoustic weight while it
is in memory (LM weight = 1/acwt; beams stay fixed in scaled-cost units), the
weight with the lowest dev %WER is recorded in ``decode_dev/wer.json``
(``acwt``, ``sweep``) and the test set is decoded once with it
(``acwt_source: "tuned on <dev decode dir>"``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from asr_hf.decode.decoder import DecodeConfig, Hypothesis, MatrixFn, decode_hypotheses
from asr_hf.decode.report import read_wer, write_decode_dir
from asr_hf.decode.scoring import score
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike

log = logging.getLogger(__name__)

#: Acoustic weights tried on dev (LM weights ~6.7 .. 16.7), as in ``conf/decode``.
DEFAULT_ACWT_SWEEP: tuple[float, ...] = (0.06, 0.08, 0.1, 0.12, 0.15)
FRAME_SHIFT = 0.01


@dataclass
class EvalSet:
    """Matrices of one set plus its references.

    Attributes:
        name: set name (``dev``, ``test``); the decode dir is ``decode_<name>``.
        items: ``(utt_id, matrix)`` (consumed once).
        refs: utterance id -> reference words.
        speakers: utterance id -> speaker (per-speaker breakdown).
    """

    name: str
    items: Iterable[tuple[str, np.ndarray]]
    refs: Mapping[str, Sequence[str]]
    speakers: Optional[Mapping[str, str]] = None


def decode_and_score(
    graph_dir: Pathlike,
    decode_dir: Pathlike,
    eval_set: EvalSet,
    config: Optional[DecodeConfig] = None,
    log_priors: Optional[np.ndarray] = None,
    matrix_fn: Optional[MatrixFn] = None,
    acwts: Optional[Sequence[float]] = None,
    acwt_source: str = "fixed",
    meta: Optional[Mapping[str, Any]] = None,
    ignore_words: Iterable[str] = (),
    max_extensions: int = 4,
    hyps_out: Optional[dict[str, Hypothesis]] = None,
) -> dict[str, Any]:
    """Decode a set (sweeping the acoustic weight if several are given), score, write the decode dir.

    A sweep whose best weight lies at one of its edges extends itself by one more weight
    beyond that edge (the sweep's own ratio there, at least 1.2x) until the best is
    bracketed, up to ``max_extensions`` times; the sweep and the chosen weight are recorded.

    Args:
        graph_dir: the graph directory.
        decode_dir: ``exp/<system>/decode_<set>``.
        eval_set: matrices and references.
        config: decoder settings (``config.acwt`` unless ``acwts``).
        log_priors: marks the matrices as log-posteriors (hybrid), see the decoder.
        matrix_fn: applied to each matrix in the workers (e.g. GMM scoring of features).
        acwts: with more than one value, decode at each and keep the best by %WER
            (ties: the one closest to ``config.acwt`` in log scale).
        acwt_source: recorded provenance of the acoustic weight.
        meta: extra ``wer.json`` fields (model, features...).
        ignore_words: words not scored (e.g. ``<unk>``).
        max_extensions: how often a sweep may extend itself past an edge (0: never).
        hyps_out: filled with the chosen weight's hypotheses (best paths with their
            transition-id alignments), e.g. for speaker adaptation on a first pass.

    Returns:
        The ``wer.json`` record.
    """
    cfg = config or DecodeConfig()
    weights = list(acwts) if acwts else [cfg.acwt]
    ignore = list(ignore_words)
    items: Iterable[tuple[str, np.ndarray]] = eval_set.items
    if len(weights) > 1 and max_extensions > 0:
        items = list(items)  # a sweep that extends itself decodes the set again
    t0 = time.perf_counter()
    all_hyps = decode_hypotheses(graph_dir, items, cfg, log_priors, weights, matrix_fn)
    results = {a: score(eval_set.refs, {u: h.words for u, h in hyps.items()}, eval_set.speakers, ignore)
               for a, hyps in all_hyps.items()}  # fmt: skip

    def pick() -> float:
        return min(results, key=lambda a: (results[a].total.wer, abs(math.log(a / cfg.acwt))))

    extended = 0
    while len(weights) > 1 and extended < max_extensions:
        ws, best = sorted(results), pick()
        if best == ws[0]:
            new_w = ws[0] / max(ws[1] / ws[0], 1.2)
        elif best == ws[-1]:
            new_w = ws[-1] * max(ws[-1] / ws[-2], 1.2)
        else:
            break  # the optimum is bracketed
        log.info("acwt sweep: best %g is at the edge of %s; extending to %g", best, ws, new_w)
        more = decode_hypotheses(graph_dir, items, cfg, log_priors, [new_w], matrix_fn)
        for a, hyps in more.items():
            all_hyps[a] = hyps
            results[a] = score(eval_set.refs, {u: h.words for u, h in hyps.items()}, eval_set.speakers, ignore)
        extended += 1
    wall = time.perf_counter() - t0
    sweep = [{"acwt": a, "lmwt": round(1 / a, 4), "wer_percent": results[a].to_json()["wer_percent"]}
             for a in sorted(results)]  # fmt: skip
    best = pick()
    hyps = all_hyps[best]
    if hyps_out is not None:
        hyps_out.update(hyps)
    if len(weights) > 1:
        acwt_source = f"best of {len(results)} on this set" + (f" (sweep extended {extended}x)" if extended else "")
        log.info("acwt sweep: %s -> %g", ", ".join(f"{s['acwt']:g}: {s['wer_percent']}" for s in sweep), best)
        edge = best in (min(results), max(results))
        if edge:
            log.warning("acwt %g is still at the edge of the sweep after %d extensions", best, extended)

    record: dict[str, Any] = {
        "acwt": best,
        "lmwt": round(1 / best, 4),
        "acwt_source": acwt_source,
        **({"sweep": sweep} if len(weights) > 1 else {}),
        "decode": {**cfg.to_dict(), "acwt": best},
        "graph": str(graph_dir),
        "hybrid_priors": log_priors is not None,
        **({"sweep_extended": extended, "sweep_best_at_edge": edge} if len(weights) > 1 else {}),
        "ignore_words": ignore,
        **_timing(hyps.values(), wall),
        **(meta or {}),
    }
    refs = {u: r.split() if isinstance(r, str) else list(r) for u, r in eval_set.refs.items()}
    failed = sorted(u for u, h in hyps.items() if not h.ok)
    if failed:
        record["failed_utts"] = failed
    return write_decode_dir(decode_dir, results[best], {u: h.words for u, h in hyps.items()}, refs, record)


def _timing(hyps: Iterable[Hypothesis], wall: float) -> dict[str, Any]:
    hyps = list(hyps)
    frames = sum(h.num_frames for h in hyps)
    audio = frames * FRAME_SHIFT
    search = sum(h.seconds for h in hyps)
    matrix = sum(h.matrix_seconds for h in hyps)
    return {
        "num_utts": len(hyps),
        "frames": frames,
        "audio_s": round(audio, 3),
        "search_s": round(search, 4),
        "matrix_s": round(matrix, 4),
        "wall_s": round(wall, 3),
        "rtf_search": round(search / audio, 6) if audio else None,
        "rtf_total": round((search + matrix) / audio, 6) if audio else None,
    }


def acwt_from(decode_dir: Pathlike) -> float:
    """The acoustic weight chosen in a scored (dev) decode directory."""
    rec = read_wer(decode_dir)
    if "acwt" not in rec:
        raise DataError(str(decode_dir), "wer.json records no acwt")
    return float(rec["acwt"])


def tune_and_test(
    graph_dir: Pathlike,
    system_dir: Pathlike,
    dev: EvalSet,
    test: Optional[EvalSet],
    config: Optional[DecodeConfig] = None,
    acwts: Sequence[float] = DEFAULT_ACWT_SWEEP,
    log_priors: Optional[np.ndarray] = None,
    matrix_fn: Optional[MatrixFn] = None,
    meta: Optional[Mapping[str, Any]] = None,
) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """Sweep the acoustic weight on ``dev``, then decode ``test`` with the best one.

    Writes ``system_dir/decode_<dev.name>`` and ``system_dir/decode_<test.name>``.

    Returns:
        The two ``wer.json`` records (test: None when not given).
    """
    cfg = config or DecodeConfig()
    system_dir = Path(system_dir)
    dev_dir = system_dir / f"decode_{dev.name}"
    dev_rec = decode_and_score(graph_dir, dev_dir, dev, cfg, log_priors, matrix_fn, acwts, meta=meta)
    if test is None:
        return dev_rec, None
    tuned = DecodeConfig(**{**cfg.to_dict(), "acwt": dev_rec["acwt"]})
    test_rec = decode_and_score(
        graph_dir, system_dir / f"decode_{test.name}", test, tuned, log_priors, matrix_fn,
        acwt_source=f"tuned on {dev_dir}", meta=meta,
    )  # fmt: skip
    return dev_rec, test_rec
