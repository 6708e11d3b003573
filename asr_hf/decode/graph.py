"""Decoding graphs: HCLG following Kaldi's ``utils/mkgraph.sh``.

The recipe, with the kaldifst / kaldi-hmm-gmm call that replaces each Kaldi binary::

    LG    = fsttablecompose L_disambig G | fstdeterminizestar --use-log=true
            | fstminimizeencoded                      kfst.compose/determinize_star/minimize_encoded
    CLG   = fstcomposecontext LG (ilabels)            kfst.compose_context
    Ha    = make-h-transducer ilabels tree mdl        khg.get_h_transducer (no self-loops)
    HCLGa = fsttablecompose Ha CLG | fstdeterminizestar --use-log=true
            | fstrmsymbols disambig_tid | fstminimizeencoded
    HCLG  = add-self-loops --self-loop-scale --reorder=true   khg.add_self_loops

Differences from Kaldi, all because the bindings lack the operation:

* ``fstpushspecial`` on LG is skipped (graph weights are not re-pushed; the
  best path and its cost are unchanged, only the beam-pruning behaviour moves
  slightly).
* ``fstrmsymbols`` is done by composing with a one-state relabelling FST that
  maps every disambiguation transition-id to epsilon.
* ``fstrmepslocal`` is skipped: the only general epsilon removal bound is
  OpenFst's ``RmEpsilon``, which would copy the arcs of each back-off state into
  every state with a back-off arc (the reason Kaldi uses a *local* removal).
  The decoder follows epsilon arcs, so results are unaffected.

A graph directory holds:

``HCLG.fst``
    OpenFst binary (``vector``/``standard``), readable by Kaldi's decoders.
``words.txt``, ``phones.txt``
    Copies from the lang dir; the graph's output labels are ``words.txt`` ids.
``tid2pdf.int``
    ``transition-id pdf-id`` per line (transition-ids 1..N): how a
    ``(T, num_pdfs)`` matrix is expanded to the graph's input labels.
``transition_model.pkl``
    The pickled :class:`kaldi_hmm_gmm.TransitionModel` the decoder API needs.
``graph.json``
    Sizes (states/arcs) of every intermediate FST, build times and settings.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from asr_hf.data.paths import GRAPH_FST
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output, is_done, mark_done
from asr_hf.utils.kaldi import kfst, khg

log = logging.getLogger(__name__)

GRAPH_JSON = "graph.json"
TID2PDF = "tid2pdf.int"
TRANSITION_MODEL = "transition_model.pkl"


@dataclass
class GraphConfig:
    """Settings of :func:`make_graph` (Kaldi ``mkgraph.sh`` defaults).

    Attributes:
        transition_scale: scale on the non-self-loop HMM transition log-probs.
        self_loop_scale: scale on the self-loop log-probs (Kaldi uses 0.1 for
            GMM and nnet1 systems, 1.0 for chain models).
        reorder: put self-loops after the forward transition (Kaldi default).
        max_det_states: abort determinization beyond this many states (-1: no limit).
    """

    transition_scale: float = 1.0
    self_loop_scale: float = 0.1
    reorder: bool = True
    max_det_states: int = -1


@dataclass
class FstSize:
    states: int
    arcs: int
    seconds: float = 0.0


@dataclass
class GraphInfo:
    """What ``graph.json`` records about a built graph."""

    sizes: dict[str, FstSize] = field(default_factory=dict)
    num_pdfs: int = 0
    num_transition_ids: int = 0
    context_width: int = 1
    central_position: int = 0
    num_disambig_phones: int = 0
    num_disambig_tids: int = 0
    build_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "GraphInfo":
        d = dict(d)
        d["sizes"] = {k: FstSize(**v) for k, v in d.get("sizes", {}).items()}
        return cls(**d)


# --------------------------------------------------------------------------- helpers


def fst_size(fst: "kfst.StdVectorFst", seconds: float = 0.0) -> FstSize:
    """Number of states and arcs of an FST."""
    n = fst.num_states
    return FstSize(states=int(n), arcs=int(sum(fst.num_arcs(s) for s in range(n))), seconds=round(seconds, 4))


def read_symbol_table(path: Pathlike) -> dict[str, int]:
    """Read a Kaldi ``symbol id`` table (``words.txt``, ``phones.txt``)."""
    table: dict[str, int] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{path}:{lineno}", f"expected 'symbol id', got {line!r}")
        table[parts[0]] = int(parts[1])
    return table


def read_int_list(path: Pathlike) -> list[int]:
    """Read a Kaldi ``.int`` file of one integer per line (e.g. ``phones/disambig.int``)."""
    out = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(int(line.split()[0]))
            except ValueError:
                raise DataError(f"{path}:{lineno}", f"expected an integer, got {line!r}") from None
    return out


def _read_fst(path: Path) -> "kfst.StdVectorFst":
    if not path.is_file():
        raise DataError(str(path), "FST file not found")
    fst = kfst.StdVectorFst.read(str(path))
    if fst is None or fst.num_states == 0:
        raise DataError(str(path), "empty or unreadable FST")
    return fst


def remove_input_symbols(fst: "kfst.StdVectorFst", symbols: list[int], keep: range) -> "kfst.StdVectorFst":
    """Kaldi's ``fstrmsymbols``: replace the input labels ``symbols`` by epsilon.

    Done as the composition ``R o fst`` with a one-state relabelling transducer
    ``R`` that has ``t:t`` for every label ``t`` in ``keep`` and ``<eps>:d`` for
    every ``d`` in ``symbols``; input labels outside ``keep`` and ``symbols``
    would be dropped, so ``keep`` must cover all other labels of ``fst``.
    """
    relabel = kfst.StdVectorFst()
    relabel.add_state()
    relabel.start = 0
    relabel.set_final(0, 0.0)
    for t in keep:
        relabel.add_arc(0, kfst.StdArc(t, t, 0.0, 0))
    for d in symbols:
        relabel.add_arc(0, kfst.StdArc(0, d, 0.0, 0))
    kfst.arcsort(relabel, sort_type="olabel")
    return kfst.compose(relabel, fst)


def _step(sizes: dict[str, FstSize], name: str, fst: "kfst.StdVectorFst", t0: float) -> None:
    sizes[name] = fst_size(fst, time.perf_counter() - t0)
    log.info("%-6s %9d states %10d arcs  (%.2f s)", name, sizes[name].states, sizes[name].arcs, sizes[name].seconds)


# --------------------------------------------------------------------------- graph recipe


def compose_lg(
    L_disambig: "kfst.StdVectorFst", G: "kfst.StdVectorFst", max_det_states: int = -1
) -> "kfst.StdVectorFst":
    """``min(det(L_disambig o G))``, determinized in the log semiring (L and G are not modified)."""
    L = kfst.StdVectorFst(L_disambig)
    kfst.arcsort(L, sort_type="olabel")
    LG = kfst.compose(L, G)
    if kfst.determinize_star(LG, use_log=True, max_states=max_det_states):
        raise DataError("LG", f"determinization stopped at max_states={max_det_states}")
    kfst.minimize_encoded(LG)
    return LG


def build_hclg(
    L_disambig: "kfst.StdVectorFst",
    G: "kfst.StdVectorFst",
    disambig_phones: list[int],
    ctx_dep: "khg.ContextDependency",
    trans_model: "khg.TransitionModel",
    config: Optional[GraphConfig] = None,
) -> tuple["kfst.StdVectorFst", GraphInfo]:
    """Build HCLG from in-memory L (with disambiguation symbols), G and an acoustic model.

    Args:
        L_disambig: lexicon transducer phones -> words with ``#n`` phones and the
            ``#0`` word->phone self-loop.
        G: grammar acceptor over word ids with ``#0`` on back-off arcs (ilabel-sorted or not).
        disambig_phones: phone ids of ``#0, #1, ...`` (``phones/disambig.int``).
        ctx_dep: the tree; its context width / central position define C.
        trans_model: the transition model; HCLG's input labels are its transition-ids.
        config: graph settings.

    Returns:
        ``(HCLG, info)``; HCLG's input labels are transition-ids ``1..N`` (no
        disambiguation symbols), output labels are word ids.
    """
    cfg = config or GraphConfig()
    info = GraphInfo(config=asdict(cfg))
    start = time.perf_counter()
    sizes = info.sizes

    G = kfst.StdVectorFst(G)
    kfst.arcsort(G, sort_type="ilabel")

    t0 = time.perf_counter()
    LG = compose_lg(L_disambig, G, cfg.max_det_states)
    _step(sizes, "LG", LG, t0)

    t0 = time.perf_counter()
    CLG, ilabels = kfst.compose_context(
        disambig_syms=list(disambig_phones),
        context_width=ctx_dep.context_width,
        central_position=ctx_dep.central_position,
        ifst=LG,
    )
    kfst.arcsort(CLG, sort_type="ilabel")
    del LG
    _step(sizes, "CLG", CLG, t0)

    t0 = time.perf_counter()
    Ha, disambig_tids = khg.get_h_transducer(
        ilabel_info=ilabels,
        ctx_dep=ctx_dep,
        trans_model=trans_model,
        config=khg.HTransducerConfig(transition_scale=cfg.transition_scale),
    )
    kfst.arcsort(Ha, sort_type="olabel")
    _step(sizes, "Ha", Ha, t0)

    t0 = time.perf_counter()
    HCLGa = kfst.compose(Ha, CLG)
    del Ha, CLG
    if kfst.determinize_star(HCLGa, use_log=True, max_states=cfg.max_det_states):
        raise DataError("HCLGa", f"determinization stopped at max_states={cfg.max_det_states}")
    num_tids = trans_model.num_transition_ids
    HCLGa = remove_input_symbols(HCLGa, list(disambig_tids), range(1, num_tids + 1))
    kfst.minimize_encoded(HCLGa)
    _step(sizes, "HCLGa", HCLGa, t0)

    t0 = time.perf_counter()
    HCLG = khg.add_self_loops(
        self_loop_scale=cfg.self_loop_scale,
        disambig_syms=[],
        reorder=cfg.reorder,
        trans_model=trans_model,
        ifst=HCLGa,
    )
    del HCLGa
    _step(sizes, "HCLG", HCLG, t0)
    if HCLG.num_states == 0:
        raise DataError("HCLG", "the decoding graph is empty (L and G share no word sequence?)")

    info.num_pdfs = int(trans_model.num_pdfs)
    info.num_transition_ids = int(num_tids)
    info.context_width = int(ctx_dep.context_width)
    info.central_position = int(ctx_dep.central_position)
    info.num_disambig_phones = len(disambig_phones)
    info.num_disambig_tids = len(disambig_tids)
    info.build_seconds = round(time.perf_counter() - start, 4)
    return HCLG, info


def transition_id_to_pdf(trans_model: "khg.TransitionModel") -> np.ndarray:
    """``tid2pdf[t]`` = pdf of transition-id ``t``; index 0 (epsilon) is -1. Shape ``(N + 1,)``."""
    arr = np.asarray(trans_model.transition_id_to_pdf_array(), dtype=np.int64)
    arr[0] = -1
    return arr


def make_graph(
    lang_dir: Pathlike,
    ctx_dep: "khg.ContextDependency",
    trans_model: "khg.TransitionModel",
    graph_dir: Pathlike,
    G_fst: Optional[Pathlike] = None,
    config: Optional[GraphConfig] = None,
    sources: Optional[dict[str, str]] = None,
) -> GraphInfo:
    """Build ``graph_dir`` (HCLG + symbol tables + pdf map + stats) from a lang dir.

    The directory is written atomically and gets a ``.done`` marker.

    Args:
        lang_dir: Kaldi-style lang dir with ``L_disambig.fst``, ``words.txt``,
            ``phones.txt``, ``phones/disambig.int`` and (unless ``G_fst``) ``G.fst``.
        ctx_dep: tree of the acoustic model.
        trans_model: transition model of the acoustic model.
        graph_dir: output directory, e.g. ``exp/tri1/graph``.
        G_fst: grammar FST (default ``lang_dir/G.fst``).
        config: graph settings.
        sources: extra provenance recorded in ``graph.json`` (e.g. the model dir).

    Returns:
        The graph statistics also written to ``graph.json``.
    """
    lang = Path(lang_dir)
    G_path = Path(G_fst) if G_fst is not None else lang / "G.fst"
    for name in ("words.txt", "phones.txt", "phones/disambig.int"):
        if not (lang / name).is_file():
            raise DataError(str(lang), f"lang dir lacks {name}")
    L = _read_fst(lang / "L_disambig.fst")
    G = _read_fst(G_path)
    disambig = read_int_list(lang / "phones" / "disambig.int")
    log.info("mkgraph: lang=%s G=%s -> %s", lang, G_path, graph_dir)

    HCLG, info = build_hclg(L, G, disambig, ctx_dep, trans_model, config)
    info.sources = {"lang_dir": str(lang), "G": str(G_path), **(sources or {})}

    with atomic_output(graph_dir, is_dir=True) as tmp:
        if not HCLG.write(str(tmp / GRAPH_FST)):
            raise OSError(f"could not write {tmp / GRAPH_FST}")
        shutil.copy(lang / "words.txt", tmp / "words.txt")
        shutil.copy(lang / "phones.txt", tmp / "phones.txt")
        tid2pdf = transition_id_to_pdf(trans_model)
        with open(tmp / TID2PDF, "w") as f:
            f.writelines(f"{t} {tid2pdf[t]}\n" for t in range(1, len(tid2pdf)))
        with open(tmp / TRANSITION_MODEL, "wb") as f:
            pickle.dump(trans_model, f)
        (tmp / GRAPH_JSON).write_text(json.dumps(info.to_json(), indent=2) + "\n")
        mark_done(tmp)
    hclg = info.sizes["HCLG"]
    log.info(
        "HCLG: %d states, %d arcs, %d pdfs, %d transition-ids; built in %.1f s",
        hclg.states, hclg.arcs, info.num_pdfs, info.num_transition_ids, info.build_seconds,
    )  # fmt: skip
    return info


def load_model_for_graph(model_dir: Pathlike) -> tuple["khg.ContextDependency", "khg.TransitionModel"]:
    """The tree and transition model of a GMM exp dir (Kaldi binary ``tree`` + ``final.mdl``)."""
    from asr_hf.gmm.model import GmmSystem

    system = GmmSystem.load(model_dir)
    return system.tree, system.tm


def mkgraph(
    lang_dir: Pathlike,
    model_dir: Pathlike,
    graph_dir: Optional[Pathlike] = None,
    G_fst: Optional[Pathlike] = None,
    config: Optional[GraphConfig] = None,
    force: bool = False,
) -> GraphInfo:
    """Kaldi's ``mkgraph.sh lang_dir model_dir graph_dir`` (default ``model_dir/graph``).

    Skips the work when ``graph_dir`` is already complete (``.done``) unless ``force``.
    """
    graph_dir = Path(graph_dir) if graph_dir is not None else Path(model_dir) / "graph"
    if is_done(graph_dir) and not force:
        log.info("%s is complete; skipping (force to rebuild)", graph_dir)
        return load_graph_info(graph_dir)
    tree, trans_model = load_model_for_graph(model_dir)
    return make_graph(lang_dir, tree, trans_model, graph_dir, G_fst, config, sources={"model_dir": str(model_dir)})


def load_graph_info(graph_dir: Pathlike) -> GraphInfo:
    """Read ``graph.json`` of a graph directory."""
    path = Path(graph_dir) / GRAPH_JSON
    if not path.is_file():
        raise DataError(str(graph_dir), f"not a graph directory (no {GRAPH_JSON})")
    return GraphInfo.from_json(json.loads(path.read_text()))


def read_tid2pdf(graph_dir: Pathlike) -> np.ndarray:
    """The ``tid2pdf`` array of a graph dir, shape ``(N + 1,)`` with ``[0] = -1``."""
    path = Path(graph_dir) / TID2PDF
    rows = np.loadtxt(path, dtype=np.int64, ndmin=2)
    if rows.size == 0 or not np.array_equal(rows[:, 0], np.arange(1, len(rows) + 1)):
        raise DataError(str(path), "expected lines 'tid pdf' for transition-ids 1..N in order")
    return np.concatenate([[-1], rows[:, 1]])
