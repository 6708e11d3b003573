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
) -> dict[str, Any]:
    """Decode a set (sweeping the acoustic weight if several are given), score, write the decode dir.

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

    Returns:
        The ``wer.json`` record.
    """
    cfg = config or DecodeConfig()
    weights = list(acwts) if acwts else [cfg.acwt]
    t0 = time.perf_counter()
    all_hyps = decode_hypotheses(graph_dir, eval_set.items, cfg, log_priors, weights, matrix_fn)
    wall = time.perf_counter() - t0

    ignore = list(ignore_words)
    sweep = []
    results = {}
    for a, hyps in all_hyps.items():
        res = score(eval_set.refs, {u: h.words for u, h in hyps.items()}, eval_set.speakers, ignore)
        results[a] = res
        sweep.append({"acwt": a, "lmwt": round(1 / a, 4), "wer_percent": res.to_json()["wer_percent"]})
    best = min(results, key=lambda a: (results[a].total.wer, abs(math.log(a / cfg.acwt))))
    hyps = all_hyps[best]
    if len(weights) > 1:
        acwt_source = f"best of {len(weights)} on this set"
        log.info("acwt sweep: %s -> %g", ", ".join(f"{s['acwt']:g}: {s['wer_percent']}" for s in sweep), best)

    record: dict[str, Any] = {
        "acwt": best,
        "lmwt": round(1 / best, 4),
        "acwt_source": acwt_source,
        **({"sweep": sweep} if len(weights) > 1 else {}),
        "decode": {**cfg.to_dict(), "acwt": best},
        "graph": str(graph_dir),
        "hybrid_priors": log_priors is not None,
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
