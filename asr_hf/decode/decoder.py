"""Lattice-faster decoding of per-utterance score matrices, in parallel processes.

Any acoustic model plugs in through one matrix per utterance, shape
``(T, num_pdfs)``:

* a GMM gives log-likelihoods ``log p(x_t | pdf)`` directly;
* a hybrid DNN gives log-posteriors ``log P(pdf | x_t)``; with the log-priors
  ``log P(pdf)`` (:func:`priors_from_counts`) the decoder turns them into the
  pseudo log-likelihood ``log P(pdf | x_t) - prior_scale * log P(pdf)``.

The decoder's input labels are transition-ids, so the (pseudo) log-likelihoods
are scaled by the acoustic weight and expanded to one column per transition-id,
``acwt * L[:, tid2pdf[1:]]`` (shape ``(T, N)``), and handed to kaldi-hmm-gmm's
``DecodableCtc``, which returns column ``tid - 1`` for input label ``tid``.

Decoding uses kaldi-hmm-gmm's ``LatticeFasterDecoder`` (beam, max-active,
lattice-beam as in Kaldi's ``latgen-faster-mapped``) and keeps the best path;
the bindings expose no lattice, so an acoustic-weight sweep re-decodes
(:func:`decode_hypotheses` with several ``acwts`` decodes each matrix once per
weight while it is in memory).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
from tqdm import tqdm

from asr_hf.decode.graph import GRAPH_FST, TRANSITION_MODEL, load_graph_info, read_tid2pdf
from asr_hf.nnet.priors import DISABLED_LOG_PRIOR, priors_from_counts  # noqa: F401  (the one priors rule)
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike
from asr_hf.utils.kaldi import kfst, khg
from asr_hf.utils.procs import pool_kwargs

log = logging.getLogger(__name__)

MatrixFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class DecodeConfig:
    """Decoder settings (Kaldi nnet1 decode defaults).

    Attributes:
        beam: decoding beam (cost units, after acoustic scaling).
        lattice_beam: lattice pruning beam.
        max_active: maximum active tokens per frame.
        min_active: minimum active tokens per frame.
        acwt: acoustic weight (Kaldi ``--acoustic-scale``); the LM weight is ``1/acwt``.
        prior_scale: scale on the log-priors subtracted from DNN log-posteriors.
        allow_partial: output the best partial path when no final state is reached.
        jobs: decoding processes (1 = in this process, 0 = one per CPU core).
    """

    beam: float = 13.0
    lattice_beam: float = 8.0
    max_active: int = 7000
    min_active: int = 200
    acwt: float = 0.1
    prior_scale: float = 1.0
    allow_partial: bool = True
    jobs: int = 1

    def decoder_config(self) -> "khg.LatticeFasterDecoderConfig":
        return khg.LatticeFasterDecoderConfig(
            beam=self.beam,
            max_active=self.max_active,
            min_active=self.min_active,
            lattice_beam=self.lattice_beam,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def num_jobs(self) -> int:
        """``jobs`` with 0 resolved to the number of CPU cores."""
        return self.jobs if self.jobs > 0 else (os.cpu_count() or 1)


@dataclass
class Hypothesis:
    """Best path of one utterance.

    Attributes:
        words: recognised words.
        num_frames: frames decoded.
        score: ``-(graph cost + acwt * acoustic cost)`` of the best path.
        ok: False when the decoder produced no output (empty matrix, failure).
        seconds: wall time of the search in its (single-threaded) process.
        matrix_seconds: wall time of preparing the matrix (``matrix_fn``, priors).
        alignment: transition-ids of the best path (one per frame).
    """

    words: list[str]
    num_frames: int
    score: float = 0.0
    ok: bool = True
    seconds: float = 0.0
    matrix_seconds: float = 0.0
    alignment: list[int] = field(default_factory=list, repr=False)


# --------------------------------------------------------------------------- matrices


def pdf_counts_from_alignments(alignments: Iterable[np.ndarray], num_pdfs: int) -> np.ndarray:
    """Frames per pdf over frame-level pdf alignments, shape ``(num_pdfs,)``."""
    counts = np.zeros(num_pdfs, dtype=np.float64)
    for ali in alignments:
        counts += np.bincount(np.asarray(ali, dtype=np.int64), minlength=num_pdfs)[:num_pdfs]
    return counts


def pseudo_loglikes(log_post: np.ndarray, log_priors: np.ndarray, prior_scale: float = 1.0) -> np.ndarray:
    """Hybrid pseudo log-likelihoods ``log_post - prior_scale * log_priors``, shape ``(T, num_pdfs)``."""
    return np.asarray(log_post, dtype=np.float32) - np.float32(prior_scale) * np.asarray(log_priors, dtype=np.float32)


def to_transition_scores(pdf_loglikes: np.ndarray, tid2pdf: np.ndarray, acwt: float) -> np.ndarray:
    """``acwt * L[:, tid2pdf[1:]]``: column ``t - 1`` scores transition-id ``t``. Shape ``(T, N)``, float32."""
    return np.ascontiguousarray(np.float32(acwt) * np.asarray(pdf_loglikes, dtype=np.float32)[:, tid2pdf[1:]])


# --------------------------------------------------------------------------- graph + search


class DecodingGraph:
    """A loaded graph directory: HCLG, word table, transition-id -> pdf map, transition model."""

    def __init__(self, graph_dir: Pathlike) -> None:
        self.graph_dir = Path(graph_dir)
        self.info = load_graph_info(self.graph_dir)
        self.fst = kfst.StdVectorFst.read(str(self.graph_dir / GRAPH_FST))
        if self.fst is None or self.fst.num_states == 0:
            raise DataError(str(self.graph_dir / GRAPH_FST), "empty or unreadable graph")
        self.tid2pdf = read_tid2pdf(self.graph_dir)
        with open(self.graph_dir / TRANSITION_MODEL, "rb") as f:
            self.trans_model = pickle.load(f)
        words: dict[int, str] = {}
        for line in (self.graph_dir / "words.txt").read_text(encoding="utf-8").splitlines():
            if line.strip():
                w, i = line.split()
                words[int(i)] = w
        self.words = words
        self.num_pdfs = self.info.num_pdfs
        if len(self.tid2pdf) - 1 != self.info.num_transition_ids:
            raise DataError(str(self.graph_dir), "tid2pdf.int does not match graph.json")


class Searcher:
    """Decodes matrices against one graph with one lattice-faster decoder, reused across utterances."""

    def __init__(self, graph: DecodingGraph, config: DecodeConfig) -> None:
        self.graph = graph
        self.config = config
        self.decoder = khg.LatticeFasterDecoderStdVectorFst(graph.fst, config.decoder_config())

    def decode(self, utt_id: str, pdf_loglikes: np.ndarray, acwt: float) -> Hypothesis:
        """Best path for one ``(T, num_pdfs)`` (pseudo) log-likelihood matrix."""
        mat = np.asarray(pdf_loglikes)
        if mat.ndim != 2 or mat.shape[1] != self.graph.num_pdfs:
            raise DataError(utt_id, f"matrix shape {mat.shape} does not match the graph's {self.graph.num_pdfs} pdfs")
        if mat.shape[0] == 0:
            log.warning("%s: no frames; empty hypothesis", utt_id)
            return Hypothesis(words=[], num_frames=0, ok=False)
        if not np.all(np.isfinite(mat)):
            raise DataError(utt_id, "matrix contains NaN or infinite values")
        t0 = time.perf_counter()
        scores = to_transition_scores(mat, self.graph.tid2pdf, acwt)
        decodable = khg.DecodableCtc(scores)
        try:
            ok, alignment, word_ids, score = khg.decode_utterance_lattice_faster(
                self.decoder, decodable, self.graph.trans_model, utt_id, self.config.allow_partial
            )
        except RuntimeError as exc:  # a Kaldi check failed inside the search: lose this utterance only
            log.warning("%s: decoding failed: %s", utt_id, " ".join(str(exc).split())[-200:])
            ok, alignment, word_ids, score = False, [], [], 0.0
        seconds = time.perf_counter() - t0
        if not ok:
            log.warning("%s: decoding failed (no surviving path)", utt_id)
        words = [self.graph.words.get(w, f"<id:{w}>") for w in word_ids]
        return Hypothesis(
            words=words, num_frames=int(mat.shape[0]), score=float(score), ok=bool(ok), seconds=seconds,
            alignment=list(alignment),
        )


# --------------------------------------------------------------------------- workers

_WORKER: dict = {}


def _worker_init(
    graph_dir: str, config: DecodeConfig, log_priors: Optional[np.ndarray], matrix_fn: Optional[MatrixFn]
) -> None:
    _WORKER["searcher"] = Searcher(DecodingGraph(graph_dir), config)
    _WORKER["log_priors"] = log_priors
    _WORKER["matrix_fn"] = matrix_fn


def _prepare(
    mat: np.ndarray, config: DecodeConfig, log_priors: Optional[np.ndarray], matrix_fn: Optional[MatrixFn]
) -> np.ndarray:
    if matrix_fn is not None:
        mat = matrix_fn(mat)
    if log_priors is not None:
        mat = pseudo_loglikes(mat, log_priors, config.prior_scale)
    return mat


def _worker_decode(utt_id: str, mat: np.ndarray, acwts: tuple[float, ...]) -> tuple[str, dict[float, Hypothesis]]:
    searcher: Searcher = _WORKER["searcher"]
    try:
        t0 = time.perf_counter()
        mat = _prepare(mat, searcher.config, _WORKER["log_priors"], _WORKER["matrix_fn"])
        prep = time.perf_counter() - t0
        hyps = {a: searcher.decode(utt_id, mat, a) for a in acwts}
        for h in hyps.values():
            h.matrix_seconds = prep
        return utt_id, hyps
    except DataError as exc:
        # DataError(item, problem) does not survive pickling; send its parts.
        raise _WorkerDataError(exc.item, exc.problem) from None


class _WorkerDataError(Exception):
    """A :class:`DataError` raised in a worker, in a picklable form."""

    def __init__(self, item: str, problem: str) -> None:
        super().__init__(item, problem)
        self.item, self.problem = item, problem


def decode_hypotheses(
    graph_dir: Pathlike,
    items: Iterable[tuple[str, np.ndarray]],
    config: Optional[DecodeConfig] = None,
    log_priors: Optional[np.ndarray] = None,
    acwts: Optional[Sequence[float]] = None,
    matrix_fn: Optional[MatrixFn] = None,
    progress: bool = True,
) -> dict[float, dict[str, Hypothesis]]:
    """Decode every ``(utt_id, matrix)`` at one or more acoustic weights.

    Args:
        graph_dir: a graph directory written by :func:`asr_hf.decode.graph.make_graph`.
        items: ``(utt_id, matrix)``; the matrix is ``(T, num_pdfs)`` log-likelihoods,
            or log-posteriors when ``log_priors`` is given, or the input of
            ``matrix_fn`` (e.g. features) when that is given.
        config: decoder settings; ``config.jobs`` processes decode in parallel.
        log_priors: ``(num_pdfs,)`` log-priors; marks the matrices as log-posteriors.
        acwts: acoustic weights to decode at (default ``[config.acwt]``).
        matrix_fn: picklable function applied to each matrix inside the worker
            (e.g. a GMM's ``pdf_loglikes``), so that likelihood computation is
            parallel too.
        progress: show a tqdm bar.

    Returns:
        ``{acwt: {utt_id: Hypothesis}}``.
    """
    cfg = config or DecodeConfig()
    weights = tuple(float(a) for a in (acwts if acwts else [cfg.acwt]))
    if any(a <= 0 for a in weights):
        raise ValueError(f"acoustic weights must be positive: {weights}")
    out: dict[float, dict[str, Hypothesis]] = {a: {} for a in weights}
    seen: set[str] = set()
    bar = tqdm(desc="decode", unit="utt", disable=not progress, mininterval=2.0)

    def collect(utt_id: str, hyps: dict[float, Hypothesis]) -> None:
        for a, h in hyps.items():
            out[a][utt_id] = h
        bar.update(1)

    def unique(it: Iterable[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
        for utt_id, mat in it:
            if utt_id in seen:
                raise DataError(utt_id, "utterance id appears twice")
            seen.add(utt_id)
            yield utt_id, mat

    try:
        if cfg.num_jobs == 1:
            _worker_init(str(graph_dir), cfg, log_priors, matrix_fn)
            try:
                for utt_id, mat in unique(items):
                    collect(*_worker_decode(utt_id, mat, weights))
            finally:
                _WORKER.clear()
        else:
            _decode_parallel(str(graph_dir), unique(items), cfg, log_priors, matrix_fn, weights, collect)
    except _WorkerDataError as exc:
        raise DataError(exc.item, exc.problem) from None
    finally:
        bar.close()
    return out


def _decode_parallel(
    graph_dir: str,
    items: Iterator[tuple[str, np.ndarray]],
    cfg: DecodeConfig,
    log_priors: Optional[np.ndarray],
    matrix_fn: Optional[MatrixFn],
    weights: tuple[float, ...],
    collect: Callable[[str, dict[float, Hypothesis]], None],
) -> None:
    # "spawn": the parent may hold torch/OpenMP threads, which fork does not survive.
    ctx = multiprocessing.get_context("spawn")
    max_in_flight = 4 * cfg.num_jobs  # bounds the matrices held in memory
    init_args = (graph_dir, cfg, log_priors, matrix_fn)
    with cf.ProcessPoolExecutor(cfg.num_jobs, mp_context=ctx, **pool_kwargs(_worker_init, init_args)) as pool:
        pending: set[cf.Future] = set()
        for utt_id, mat in items:
            pending.add(pool.submit(_worker_decode, utt_id, mat, weights))
            if len(pending) >= max_in_flight:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    collect(*fut.result())
        for fut in cf.as_completed(pending):
            collect(*fut.result())


def decode_matrices(
    graph_dir: Pathlike,
    items: Iterable[tuple[str, np.ndarray]],
    config: Optional[DecodeConfig] = None,
    log_priors: Optional[np.ndarray] = None,
) -> dict[str, list[str]]:
    """Decode ``(utt_id, (T, num_pdfs) matrix)`` items to word sequences at ``config.acwt``.

    Matrices are log-likelihoods, or log-posteriors when ``log_priors`` is given
    (see :func:`decode_hypotheses` for the details).
    """
    cfg = config or DecodeConfig()
    hyps = decode_hypotheses(graph_dir, items, cfg, log_priors=log_priors, progress=False)[float(cfg.acwt)]
    return {u: h.words for u, h in hyps.items()}
