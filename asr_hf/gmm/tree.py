"""Phonetic decision trees for tied context-dependent states (Kaldi-compatible).

(About 860 lines: Kaldi's tree pipeline, statistics -> phone clustering -> questions ->
greedy splitting -> leaf clustering, is one data flow over one statistics type; split along
those stages when it grows.)

kaldi-hmm-gmm has no tree building, so this module implements the pieces of
Kaldi's ``acc-tree-stats`` / ``cluster-phones`` / ``compile-questions`` /
``build-tree`` in numpy:

1. **Statistics** (:class:`TreeStats`): one Gaussian's sufficient statistics
   (count, sum x, sum x^2) per *event* ``(pdf-class, left, centre, right)``,
   accumulated from monophone alignments.  Phone 0 marks the utterance
   boundary; context-independent phones (silence) get their contexts zeroed.
2. **Questions** (:func:`cluster_phones`, :func:`build_questions`): automatic
   top-down binary clustering of the phone sets by the likelihood of their
   central-state Gaussians (every node of the cluster tree is a question),
   plus the lang dir's extra questions and optionally a phonetically
   motivated set for the CMU phones.
3. **Splitting** (:func:`build_tree`): every root (a phone set from
   ``phones/roots.int``; "shared" roots start with all pdf-classes in one leaf)
   is split greedily, always taking the globally best split, until
   ``num_leaves`` leaves exist or no split gains more than ``thresh``.  A
   split must leave ``min_leaf_count`` frames on each side.  The objective of a
   set of events is the log-likelihood of its data under one diagonal
   Gaussian fitted to it,

       L(S) = -0.5 n (D (1 + log 2 pi) + sum_d log max(var_d, var_floor)),

   and a question's gain is ``L(yes) + L(no) - L(S)``.
4. **Merging**: within each root, leaves are clustered bottom-up while the
   likelihood loss of merging two is below ``cluster_thresh`` (by default the
   smallest split gain that was accepted, as Kaldi's ``--cluster-thresh=-1``).
   Merged leaves share one pdf.
5. **Serialization**: the result is a Kaldi ``ContextDependency`` (N=3, P=1)
   whose ``ToPdf`` map is ``TableEventMap`` on the centre phone, then (for
   unshared roots) on the pdf-class, then ``SplitEventMap``s ending in
   ``ConstantEventMap``s: :func:`DecisionTree.to_kaldi` loads it into
   ``khg.ContextDependency``.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from asr_hf.gmm.kaldi_format import (
    PDF_CLASS_KEY,
    ConstantNode,
    EventNode,
    SplitNode,
    TableNode,
    context_dependency_bytes,
    context_dependency_from_bytes,
    write_tree,
)
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output

log = logging.getLogger(__name__)

LOG_2PI = float(np.log(2 * np.pi))
# Event columns: pdf-class (Kaldi key -1), left (0), centre (1), right (2).
COL_OF_KEY = {PDF_CLASS_KEY: 0, 0: 1, 1: 2, 2: 3}
KEY_OF_COL = {v: k for k, v in COL_OF_KEY.items()}


# ----------------------------------------------------------------------------- statistics
@dataclass
class TreeStats:
    """Gaussian statistics per event (Kaldi ``acc-tree-stats`` output).

    Attributes:
        events: (E, 4) int32 [pdf_class, left, centre, right], unique rows.
        count: (E,) float64; x, x2: (E, D) float64 sums of features / squares.
    """

    events: np.ndarray
    count: np.ndarray
    x: np.ndarray
    x2: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    @property
    def num_events(self) -> int:
        return int(self.events.shape[0])

    @classmethod
    def empty(cls, dim: int) -> "TreeStats":
        return cls(np.zeros((0, 4), np.int32), np.zeros(0), np.zeros((0, dim)), np.zeros((0, dim)))

    @classmethod
    def from_frames(cls, feats: np.ndarray, events: np.ndarray) -> "TreeStats":
        """Reduce per-frame events (T, 4) and features (T, D) to unique-event stats."""
        x = np.asarray(feats, dtype=np.float64)
        ev = np.asarray(events, dtype=np.int64)
        if ev.shape[0] != x.shape[0]:
            raise ValueError("events and features differ in length")
        if ev.shape[0] == 0:
            return cls.empty(x.shape[1])
        return _reduce(ev, np.ones(ev.shape[0]), x, x * x)

    @classmethod
    def merge(cls, parts: Iterable["TreeStats"]) -> "TreeStats":
        parts = [p for p in parts if p.num_events]
        if not parts:
            raise ValueError("no tree statistics to merge")
        return _reduce(
            np.concatenate([p.events for p in parts]).astype(np.int64),
            np.concatenate([p.count for p in parts]),
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.x2 for p in parts]),
        )

    def save(self, path: Pathlike) -> None:
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, events=self.events, count=self.count, x=self.x, x2=self.x2)

    @classmethod
    def load(cls, path: Pathlike) -> "TreeStats":
        with np.load(path) as z:
            return cls(z["events"], z["count"], z["x"], z["x2"])


def _reduce(ev: np.ndarray, count: np.ndarray, x: np.ndarray, x2: np.ndarray) -> TreeStats:
    base = int(max(ev.max(), 0)) + 2
    code = ((ev[:, 0] * base + ev[:, 1]) * base + ev[:, 2]) * base + ev[:, 3]
    order = np.argsort(code, kind="stable")
    code = code[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(code)) + 1])
    return TreeStats(
        events=ev[order][starts].astype(np.int32),
        count=np.add.reduceat(count[order], starts),
        x=np.add.reduceat(x[order], starts, axis=0),
        x2=np.add.reduceat(x2[order], starts, axis=0),
    )


def frame_events(
    phones: np.ndarray, starts: np.ndarray, ends: np.ndarray, pdf_class: np.ndarray, ci_phones: Sequence[int]
) -> np.ndarray:
    """Per-frame events (T, 4) [pdf_class, left, centre, right] of one utterance.

    Args:
        phones / starts / ends: the phone segments (see ``TransitionInfo.phone_segments``).
        pdf_class: (T,) pdf-class of every frame.
        ci_phones: context-independent phones; their frames get left = right = 0.
    """
    n = len(phones)
    left = np.concatenate([[0], phones[:-1]]) if n else np.zeros(0, np.int64)
    right = np.concatenate([phones[1:], [0]]) if n else np.zeros(0, np.int64)
    lengths = ends - starts
    c = np.repeat(phones, lengths)
    out = np.stack([np.asarray(pdf_class), np.repeat(left, lengths), c, np.repeat(right, lengths)], axis=1)
    if len(ci_phones):
        ci = np.isin(c, np.asarray(ci_phones))
        out[ci, 1] = 0
        out[ci, 3] = 0
    return out.astype(np.int32)


def gauss_objf(count: np.ndarray, x: np.ndarray, x2: np.ndarray, var_floor: float) -> np.ndarray:
    """Log-likelihood of the data under its own ML diagonal Gaussian (Kaldi ``GaussClusterable::Objf``).

    Works on any leading shape: count (...,), x / x2 (..., D).  Zero counts give 0.
    """
    count = np.asarray(count, dtype=np.float64)
    safe = np.where(count > 0, count, 1.0)
    mean = x / safe[..., None]
    var = np.maximum(x2 / safe[..., None] - mean * mean, var_floor)
    d = x.shape[-1]
    obj = -0.5 * count * (d * (1.0 + LOG_2PI) + np.log(var).sum(-1))
    return np.where(count > 0, obj, 0.0)


# ----------------------------------------------------------------------------- questions
# Broad phonetic classes of the (stress-free) CMU phones, for the optional
# linguistically motivated question set.
PHONETIC_CLASSES: dict[str, tuple[str, ...]] = {
    "vowel": ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"),
    "front_vowel": ("AE", "EH", "EY", "IH", "IY"),
    "back_vowel": ("AA", "AO", "OW", "UH", "UW"),
    "central_vowel": ("AH", "ER"),
    "high_vowel": ("IH", "IY", "UH", "UW"),
    "low_vowel": ("AA", "AE", "AO"),
    "diphthong": ("AW", "AY", "EY", "OW", "OY"),
    "rounded": ("AO", "OW", "OY", "UH", "UW", "W"),
    "consonant": ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH", "T",
                  "TH", "V", "W", "Y", "Z", "ZH"),
    "stop": ("B", "D", "G", "K", "P", "T"),
    "voiced_stop": ("B", "D", "G"),
    "unvoiced_stop": ("K", "P", "T"),
    "fricative": ("DH", "F", "HH", "S", "SH", "TH", "V", "Z", "ZH"),
    "voiced_fricative": ("DH", "V", "Z", "ZH"),
    "unvoiced_fricative": ("F", "HH", "S", "SH", "TH"),
    "sibilant": ("CH", "JH", "S", "SH", "Z", "ZH"),
    "affricate": ("CH", "JH"),
    "nasal": ("M", "N", "NG"),
    "liquid": ("L", "R"),
    "glide": ("W", "Y"),
    "approximant": ("L", "R", "W", "Y"),
    "labial": ("B", "F", "M", "P", "V", "W"),
    "dental": ("DH", "TH"),
    "alveolar": ("D", "L", "N", "S", "T", "Z"),
    "postalveolar": ("CH", "JH", "SH", "ZH", "R"),
    "velar": ("G", "K", "NG"),
    "voiced": ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW", "B", "D",
               "DH", "G", "JH", "L", "M", "N", "NG", "R", "V", "W", "Y", "Z", "ZH"),
}  # fmt: skip


def phonetic_questions(phone_ids: dict[str, int]) -> list[list[int]]:
    """The :data:`PHONETIC_CLASSES` as phone-id sets (phones missing from the table skipped)."""
    out = []
    for members in PHONETIC_CLASSES.values():
        ids = sorted(phone_ids[p] for p in members if p in phone_ids)
        if ids:
            out.append(ids)
    return out


def _set_stats(stats: TreeStats, phone_sets: Sequence[Sequence[int]], central_class: dict[int, int]):
    """Per phone set: (count, x, x2) of the central pdf-class events, all contexts."""
    d = stats.dim
    n = np.zeros(len(phone_sets))
    x = np.zeros((len(phone_sets), d))
    x2 = np.zeros((len(phone_sets), d))
    set_of = {p: i for i, s in enumerate(phone_sets) for p in s}
    for e in range(stats.num_events):
        k, _, c, _ = stats.events[e]
        i = set_of.get(int(c))
        if i is None or central_class.get(int(c)) != int(k):
            continue
        n[i] += stats.count[e]
        x[i] += stats.x[e]
        x2[i] += stats.x2[e]
    return n, x, x2


def cluster_phones(
    stats: TreeStats,
    phone_sets: Sequence[Sequence[int]],
    central_class: dict[int, int],
    var_floor: float = 0.01,
    max_iter: int = 20,
) -> list[list[int]]:
    """Automatic questions by top-down binary clustering (Kaldi ``cluster-phones``).

    Each phone set is represented by the statistics of its central pdf-class
    (over all contexts).  A cluster is split in two by projecting the member
    means on their principal direction and then refining by moving single
    members while the two-Gaussian likelihood improves; this recurses down to
    single sets.  Every node of the resulting binary tree (leaves included,
    the root excluded) becomes a question.

    Returns:
        questions as sorted phone-id lists.
    """
    n, x, x2 = _set_stats(stats, phone_sets, central_class)
    items = [i for i in range(len(phone_sets)) if n[i] > 0]
    questions: list[list[int]] = []

    def phones_of(members: Sequence[int]) -> list[int]:
        return sorted(p for i in members for p in phone_sets[i])

    def objf(members: np.ndarray) -> float:
        return float(gauss_objf(n[members].sum(), x[members].sum(0), x2[members].sum(0), var_floor))

    stack = [np.array(items, dtype=np.int64)]
    while stack:
        members = stack.pop()
        if len(members) < 2:
            continue
        a, b = _two_means(members, n, x, x2, var_floor, max_iter, objf)
        for part in (a, b):
            questions.append(phones_of(part))
            stack.append(part)
    return questions


def _two_means(members, n, x, x2, var_floor, max_iter, objf):
    means = x[members] / n[members, None]
    w = n[members] / n[members].sum()
    centre = (w[:, None] * means).sum(0)
    dev = means - centre
    # Principal direction of the (count-weighted, variance-normalised) member means.
    scale = np.sqrt(np.maximum((w[:, None] * (x2[members] / n[members, None] - centre**2)).sum(0), var_floor))
    z = dev / scale
    cov = (w[:, None] * z).T @ z
    vals, vecs = np.linalg.eigh(cov)
    proj = z @ vecs[:, -1]
    side = proj > np.median(proj)
    if side.all() or not side.any():
        side = np.zeros(len(members), bool)
        side[np.argmax(proj)] = True
    for _ in range(max_iter):
        moved = False
        for j in range(len(members)):
            cur = side.copy()
            if cur.sum() == (1 if cur[j] else len(cur) - 1):
                continue  # would empty a side
            before = objf(members[cur]) + objf(members[~cur])
            cur[j] = ~cur[j]
            after = objf(members[cur]) + objf(members[~cur])
            if after > before + 1e-9:
                side = cur
                moved = True
        if not moved:
            break
    return members[side], members[~side]


def build_questions(
    stats: TreeStats,
    phone_sets: Sequence[Sequence[int]],
    central_class: dict[int, int],
    extra_questions: Sequence[Sequence[int]] = (),
    boundary_like: Optional[int] = None,
    kind: str = "auto",
    phone_table: Optional[dict[str, int]] = None,
    var_floor: float = 0.01,
) -> list[tuple[int, ...]]:
    """The context question set (Kaldi ``cluster-phones`` + ``extra_questions`` + ``compile-questions``).

    Args:
        kind: ``"auto"`` (clustering), ``"phonetic"`` (:data:`PHONETIC_CLASSES`
            plus one question per phone set) or ``"both"``.
        boundary_like: a phone (the optional silence) whose questions also
            contain the utterance boundary 0; ``{0}`` is always a question.
        phone_table: phone name -> id, needed for ``"phonetic"``.

    Returns:
        unique sorted tuples of phone ids.
    """
    if kind not in ("auto", "phonetic", "both"):
        raise ValueError(f"unknown question kind {kind!r}")
    qs: list[Sequence[int]] = []
    if kind in ("auto", "both"):
        qs += cluster_phones(stats, phone_sets, central_class, var_floor=var_floor)
    if kind in ("phonetic", "both"):
        if phone_table is None:
            raise ValueError("phonetic questions need the phone table")
        qs += phonetic_questions(phone_table)
        qs += [list(s) for s in phone_sets]
    qs += [list(q) for q in extra_questions]
    out: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    for q in qs:
        s = set(int(p) for p in q)
        if boundary_like is not None and boundary_like in s:
            s.add(0)
        t = tuple(sorted(s))
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    if (0,) not in seen:
        out.append((0,))
    return out


# ----------------------------------------------------------------------------- tree building
@dataclass
class TreeConfig:
    """Tree building options (Kaldi ``build-tree`` equivalents).

    Attributes:
        num_leaves: target number of leaves before merging (``--max-leaves``).
        min_leaf_count: frames a split must leave on each side.
        thresh: minimum likelihood gain of a split (``--thresh``).
        cluster_thresh: merge leaves of a root while the loss is below this;
            negative = the smallest accepted split gain (``--cluster-thresh=-1``);
            0 disables merging.
        var_floor: variance floor of the Gaussian objective.
        questions: ``"auto"``, ``"phonetic"`` or ``"both"`` (see :func:`build_questions`).
    """

    num_leaves: int = 2000
    min_leaf_count: float = 100.0
    thresh: float = 0.0
    cluster_thresh: float = -1.0
    var_floor: float = 0.01
    questions: str = "auto"


@dataclass(frozen=True)
class Root:
    """A tree root: phones sharing one tree, Kaldi ``roots.int`` semantics."""

    phones: tuple[int, ...]
    shared: bool = True  # all pdf-classes start in one leaf (the tree may ask about the pdf-class)
    split: bool = True  # the tree may split this root at all


def read_roots(path: Pathlike) -> list[Root]:
    """Parse Kaldi ``phones/roots.int`` (``shared|not-shared split|not-split p1 p2 ...``)."""
    roots = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3 or parts[0] not in ("shared", "not-shared") or parts[1] not in ("split", "not-split"):
            raise DataError(f"{path}:{lineno}", f"bad roots line {line!r}")
        roots.append(Root(tuple(int(p) for p in parts[2:]), parts[0] == "shared", parts[1] == "split"))
    return roots


@dataclass
class _Leaf:
    root: int
    idx: np.ndarray  # event indices into the root's arrays
    n: float
    x: np.ndarray
    x2: np.ndarray
    node: dict = field(default_factory=dict)  # the mutable node this leaf currently is


@dataclass
class BuildReport:
    num_leaves: int
    num_pdfs: int
    objf_gain: float
    smallest_split: float
    cluster_thresh: float
    merges: int
    total_count: float


class DecisionTree:
    """A built tree: per-root binary trees over events, leaves mapped to pdfs.

    Attributes:
        roots: the :class:`Root` list; ``num_pdf_classes``: phone -> count.
        root_nodes: per root, a nested dict tree: ``{"leaf": pdf}`` or
            ``{"key": k, "yes_set": (...), "yes": node, "no": node}``; for
            unshared roots a list of such trees, one per pdf-class.
        num_pdfs: number of distinct pdfs.
        pdf_stats: (count, x, x2) per pdf from the training statistics.
        pdf_source: per pdf, one (phone, pdf_class) it covers (for back-off init).
    """

    def __init__(self, roots, num_pdf_classes, root_nodes, num_pdfs, pdf_stats, pdf_source, report):
        self.roots: list[Root] = roots
        self.num_pdf_classes: dict[int, int] = num_pdf_classes
        self.root_nodes = root_nodes
        self.num_pdfs: int = num_pdfs
        self.pdf_stats: tuple[np.ndarray, np.ndarray, np.ndarray] = pdf_stats
        self.pdf_source: list[tuple[int, int]] = pdf_source
        self.report: BuildReport = report

    # --------------------------------------------------------------- Kaldi form
    def event_map(self) -> EventNode:
        """The Kaldi ``ToPdf`` event map (see module docstring)."""
        max_phone = max(self.num_pdf_classes)
        table: list[Optional[EventNode]] = [None] * (max_phone + 1)
        for r, root in enumerate(self.roots):
            sub = self.root_nodes[r]
            for p in root.phones:
                if root.shared:
                    table[p] = _to_event_node(sub)
                else:
                    table[p] = TableNode(PDF_CLASS_KEY, [_to_event_node(s) for s in sub[: self.num_pdf_classes[p]]])
        return TableNode(1, table)

    def kaldi_bytes(self) -> bytes:
        return context_dependency_bytes(self.event_map(), 3, 1)

    def to_kaldi(self):
        """A ``khg.ContextDependency`` (loaded from the serialized binary tree)."""
        return context_dependency_from_bytes(self.kaldi_bytes())

    def write(self, path: Pathlike) -> None:
        """Write the Kaldi binary ``tree`` file."""
        write_tree(path, self.event_map(), 3, 1)

    # --------------------------------------------------------------- lookup
    def lookup(self, left: int, centre: int, right: int, pdf_class: int) -> int:
        """pdf of one context (Python-side; same answer as ``ContextDependency.compute``)."""
        r = self._root_of[centre]
        node = self.root_nodes[r] if self.roots[r].shared else self.root_nodes[r][pdf_class]
        ev = {PDF_CLASS_KEY: pdf_class, 0: left, 1: centre, 2: right}
        while "leaf" not in node:
            node = node["yes"] if ev[node["key"]] in node["yes_set"] else node["no"]
        return int(node["leaf"])

    @property
    def _root_of(self) -> dict[int, int]:
        return {p: r for r, root in enumerate(self.roots) for p in root.phones}


def _to_event_node(node: dict) -> EventNode:
    # iterative post-order conversion
    out: dict[int, EventNode] = {}
    stack = [(node, False)]
    while stack:
        nd, done = stack.pop()
        if "leaf" in nd:
            out[id(nd)] = ConstantNode(int(nd["leaf"]))
        elif done:
            out[id(nd)] = SplitNode(int(nd["key"]), tuple(nd["yes_set"]), out[id(nd["yes"])], out[id(nd["no"])])
        else:
            stack.append((nd, True))
            stack.append((nd["no"], False))
            stack.append((nd["yes"], False))
    return out[id(node)]


def build_tree(
    stats: TreeStats,
    roots: Sequence[Root],
    num_pdf_classes: dict[int, int],
    questions: Sequence[Sequence[int]],
    config: TreeConfig = TreeConfig(),
) -> DecisionTree:
    """Grow, then cluster, a decision tree (Kaldi ``build-tree``).

    Args:
        stats: event statistics (:class:`TreeStats`).
        roots: tree roots; every phone with a topology must be in exactly one.
        num_pdf_classes: phone -> number of pdf-classes.
        questions: phone sets asked about the left/right (and, for multi-phone
            roots, the centre) phone.
        config: sizes and thresholds.

    Returns:
        the tree; pdf ids are numbered root by root in tree order.
    """
    max_phone = max(num_pdf_classes)
    num_values = max_phone + 1
    root_of = {}
    for r, root in enumerate(roots):
        for p in root.phones:
            if p in root_of:
                raise DataError("roots", f"phone {p} is in more than one root")
            if p not in num_pdf_classes:
                raise DataError("roots", f"phone {p} has no topology")
            root_of[p] = r
    missing = sorted(set(num_pdf_classes) - set(root_of))
    if missing:
        raise DataError("roots", f"phones {missing[:10]} are in no root")

    # Question matrices per key: rows are questions, columns phone values.
    phone_q = np.zeros((len(questions), num_values))
    for i, q in enumerate(questions):
        ids = [p for p in q if 0 <= p < num_values]
        phone_q[i, ids] = 1.0
    max_classes = max(num_pdf_classes.values())
    class_qs = [tuple(range(c + 1)) for c in range(max_classes - 1)] + [(c,) for c in range(max_classes)]
    class_qs = list(dict.fromkeys(class_qs))
    class_q = np.zeros((len(class_qs), max_classes))
    for i, q in enumerate(class_qs):
        class_q[i, list(q)] = 1.0

    # Events per root.
    ev = stats.events
    ev_root = np.array([root_of.get(int(c), -1) for c in ev[:, 2]], dtype=np.int64) if len(ev) else np.zeros(0, np.int64)
    if np.any(ev_root < 0):
        bad = sorted({int(c) for c in ev[ev_root < 0, 2]})
        raise DataError("tree stats", f"statistics for phones {bad[:10]} that have no root")
    bad_class = [int(e[2]) for e in ev if e[0] >= num_pdf_classes[int(e[2])]] if len(ev) else []
    if bad_class:
        raise DataError("tree stats", f"pdf-class out of range for phone {bad_class[0]}")

    d = stats.dim
    leaves: list[_Leaf] = []
    root_trees: list[object] = []
    for r, root in enumerate(roots):
        idx = np.flatnonzero(ev_root == r)
        nclass = max(num_pdf_classes[p] for p in root.phones)
        if root.shared:
            leaf = _make_leaf(stats, r, idx, d)
            leaves.append(leaf)
            root_trees.append(leaf.node)
        else:
            nodes = []
            for k in range(nclass):
                leaf = _make_leaf(stats, r, idx[ev[idx, 0] == k], d)
                leaves.append(leaf)
                nodes.append(leaf.node)
            root_trees.append(nodes)

    keys_for_root = []
    for root in roots:
        keys = [0, 2]
        if len(root.phones) > 1:
            keys.append(1)
        if root.shared:
            keys.append(PDF_CLASS_KEY)
        keys_for_root.append(keys)

    def best_split(leaf: _Leaf):
        root = roots[leaf.root]
        if not root.split or leaf.n < 2 * config.min_leaf_count or len(leaf.idx) < 2:
            return None
        base = float(gauss_objf(leaf.n, leaf.x, leaf.x2, config.var_floor))
        best = None
        for key in keys_for_root[leaf.root]:
            col = COL_OF_KEY[key]
            vals = ev[leaf.idx, col].astype(np.int64)
            qmat = class_q if key == PDF_CLASS_KEY else phone_q
            qsets = class_qs if key == PDF_CLASS_KEY else questions
            nv = qmat.shape[1]
            cn = np.bincount(vals, weights=stats.count[leaf.idx], minlength=nv)[:nv]
            cx = _group_sum(vals, nv, stats.x[leaf.idx])
            cx2 = _group_sum(vals, nv, stats.x2[leaf.idx])
            yn = qmat @ cn
            nn = leaf.n - yn
            valid = (yn >= config.min_leaf_count) & (nn >= config.min_leaf_count)
            if not valid.any():
                continue
            qi = np.flatnonzero(valid)
            yx, yx2 = qmat[qi] @ cx, qmat[qi] @ cx2
            gain = (
                gauss_objf(yn[qi], yx, yx2, config.var_floor)
                + gauss_objf(nn[qi], leaf.x - yx, leaf.x2 - yx2, config.var_floor)
                - base
            )
            j = int(np.argmax(gain))
            if best is None or gain[j] > best[0]:
                best = (float(gain[j]), key, tuple(int(v) for v in qsets[qi[j]]))
        return best

    heap: list[tuple[float, int, int]] = []
    splits: dict[int, tuple] = {}
    counter = 0
    for li, leaf in enumerate(leaves):
        b = best_split(leaf)
        if b is not None and b[0] > config.thresh:
            splits[li] = b
            heapq.heappush(heap, (-b[0], counter, li))
            counter += 1
    num_leaves = len(leaves)
    total_gain = 0.0
    smallest = np.inf
    alive = set(range(len(leaves)))
    while heap and num_leaves < config.num_leaves:
        neg_gain, _, li = heapq.heappop(heap)
        gain, key, yes_set = splits.pop(li)
        leaf = leaves[li]
        col = COL_OF_KEY[key]
        mask = np.isin(ev[leaf.idx, col], np.asarray(yes_set))
        yes = _make_leaf(stats, leaf.root, leaf.idx[mask], d)
        no = _make_leaf(stats, leaf.root, leaf.idx[~mask], d)
        node = leaf.node
        node.clear()
        node.update(key=key, yes_set=yes_set, yes=yes.node, no=no.node)
        alive.discard(li)
        for child in (yes, no):
            leaves.append(child)
            ci = len(leaves) - 1
            alive.add(ci)
            b = best_split(child)
            if b is not None and b[0] > config.thresh:
                splits[ci] = b
                heapq.heappush(heap, (-b[0], counter, ci))
                counter += 1
        num_leaves += 1
        total_gain += gain
        smallest = min(smallest, gain)
    if not np.isfinite(smallest):
        smallest = 0.0

    # Bottom-up clustering of leaves within each root.
    cluster_thresh = smallest if config.cluster_thresh < 0 else config.cluster_thresh
    final = [leaves[i] for i in sorted(alive)]
    groups: dict[int, list[_Leaf]] = {}
    for leaf in final:
        groups.setdefault(leaf.root, []).append(leaf)
    merged_into: dict[int, int] = {}  # id(leaf) -> cluster id
    clusters: list[list[_Leaf]] = []
    merges = 0
    for r in range(len(roots)):
        members = groups.get(r, [])
        cl, m = _cluster_leaves(members, cluster_thresh, config.var_floor, roots[r].shared, root_trees[r])
        merges += m
        for group in cl:
            cid = len(clusters)
            clusters.append(group)
            for leaf in group:
                merged_into[id(leaf)] = cid

    # Number pdfs in tree order (root by root, depth first, yes before no).
    pdf_of_cluster: dict[int, int] = {}
    for r in range(len(roots)):
        for node in _leaf_nodes_in_order(root_trees[r]):
            cid = merged_into[id(node["_leaf"])]
            if cid not in pdf_of_cluster:
                pdf_of_cluster[cid] = len(pdf_of_cluster)
            node["leaf"] = pdf_of_cluster[cid]
    num_pdfs = len(pdf_of_cluster)
    pn = np.zeros(num_pdfs)
    px = np.zeros((num_pdfs, d))
    px2 = np.zeros((num_pdfs, d))
    source: list[Optional[tuple[int, int]]] = [None] * num_pdfs
    for cid, group in enumerate(clusters):
        p = pdf_of_cluster[cid]
        for leaf in group:
            pn[p] += leaf.n
            px[p] += leaf.x
            px2[p] += leaf.x2
    # One (phone, pdf-class) per pdf for back-off initialisation.
    for r, root in enumerate(roots):
        for p in root.phones:
            for k in range(num_pdf_classes[p]):
                node = root_trees[r] if root.shared else root_trees[r][k]
                pdf = _descend_any(node, k, p)
                if source[pdf] is None:
                    source[pdf] = (p, k)
    for node_list in root_trees:
        for node in _leaf_nodes_in_order(node_list):
            node.pop("_leaf", None)
    report = BuildReport(
        num_leaves=num_leaves, num_pdfs=num_pdfs, objf_gain=total_gain, smallest_split=float(smallest),
        cluster_thresh=float(cluster_thresh), merges=merges, total_count=float(stats.count.sum()),
    )  # fmt: skip
    log.info(
        "tree: %d leaves -> %d pdfs after %d merges (objf gain %.4g over %.0f frames = %.4f/frame; smallest split %.4g)",
        num_leaves, num_pdfs, merges, total_gain, report.total_count, total_gain / max(report.total_count, 1), smallest,
    )  # fmt: skip
    return DecisionTree(
        list(roots), dict(num_pdf_classes), root_trees, num_pdfs, (pn, px, px2), [s or (0, 0) for s in source], report
    )


def _group_sum(vals: np.ndarray, num_values: int, rows: np.ndarray) -> np.ndarray:
    """``out[v] = rows[vals == v].sum(0)`` for v < num_values (sort + reduceat; np.add.at is slow)."""
    out = np.zeros((num_values, rows.shape[1]))
    if len(vals) == 0:
        return out
    order = np.argsort(vals, kind="stable")
    sv = vals[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(sv)) + 1])
    out[sv[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return out


def _make_leaf(stats: TreeStats, root: int, idx: np.ndarray, d: int) -> _Leaf:
    leaf = _Leaf(
        root=root,
        idx=idx,
        n=float(stats.count[idx].sum()),
        x=stats.x[idx].sum(0) if len(idx) else np.zeros(d),
        x2=stats.x2[idx].sum(0) if len(idx) else np.zeros(d),
    )
    leaf.node["_leaf"] = leaf
    return leaf


def _leaf_nodes_in_order(tree) -> list[dict]:
    trees = tree if isinstance(tree, list) else [tree]
    out = []
    for t in trees:
        stack = [t]
        while stack:
            nd = stack.pop()
            if "key" in nd:
                stack.append(nd["no"])
                stack.append(nd["yes"])
            else:
                out.append(nd)
    return out


def _descend_any(node: dict, pdf_class: int, phone: int) -> int:
    """Follow a tree for a pdf-class/centre phone, taking 'no' for context questions."""
    while "key" in node:
        if node["key"] == PDF_CLASS_KEY:
            node = node["yes"] if pdf_class in node["yes_set"] else node["no"]
        elif node["key"] == 1:
            node = node["yes"] if phone in node["yes_set"] else node["no"]
        else:
            node = node["no"]
    return int(node["leaf"])


def _cluster_leaves(members: list[_Leaf], thresh: float, var_floor: float, shared: bool, tree) -> tuple[list[list[_Leaf]], int]:
    """Greedy bottom-up merging of a root's leaves while the loss is below ``thresh``.

    Leaves of an unshared root are only merged within the same pdf-class.
    """
    if thresh <= 0 or len(members) < 2:
        return [[m] for m in members], 0
    if not shared:
        # group by pdf-class subtree
        cls_of = {}
        for k, sub in enumerate(tree):
            for nd in _leaf_nodes_in_order(sub):
                cls_of[id(nd["_leaf"])] = k
        by_class: dict[int, list[_Leaf]] = {}
        for m in members:
            by_class.setdefault(cls_of[id(m)], []).append(m)
        out, total = [], 0
        for k in sorted(by_class):
            cl, m = _cluster_leaves(by_class[k], thresh, var_floor, True, None)
            out += cl
            total += m
        return out, total
    groups = [[m] for m in members]
    n = np.array([m.n for m in members])
    x = np.stack([m.x for m in members])
    x2 = np.stack([m.x2 for m in members])
    own = gauss_objf(n, x, x2, var_floor)
    alive = np.ones(len(members), bool)
    merges = 0
    while alive.sum() > 1:
        ids = np.flatnonzero(alive)
        pn = n[ids][:, None] + n[ids][None, :]
        pobj = gauss_objf(pn, x[ids][:, None] + x[ids][None, :], x2[ids][:, None] + x2[ids][None, :], var_floor)
        loss = own[ids][:, None] + own[ids][None, :] - pobj
        np.fill_diagonal(loss, np.inf)
        a, b = np.unravel_index(np.argmin(loss), loss.shape)
        if loss[a, b] >= thresh:
            break
        i, j = ids[a], ids[b]
        n[i] += n[j]
        x[i] += x[j]
        x2[i] += x2[j]
        own[i] = gauss_objf(n[i], x[i], x2[i], var_floor)
        alive[j] = False
        groups[i] += groups[j]
        groups[j] = []
        merges += 1
    return [g for g in groups if g], merges


# ----------------------------------------------------------------------------- lookups
def pdf_table(tree_root: EventNode, num_pdf_classes: dict[int, int]) -> np.ndarray:
    """Dense map ``table[centre, pdf_class, left, right] -> pdf`` (-1 where undefined).

    Evaluates a Kaldi event map (N=3, P=1) on every context at once with numpy;
    used to convert alignments between trees and to check serialized trees.
    """
    max_phone = max(num_pdf_classes)
    v = max_phone + 1
    max_cls = max(num_pdf_classes.values())
    out = np.full((v, max_cls, v, v), -1, dtype=np.int32)
    lg, rg = np.meshgrid(np.arange(v), np.arange(v), indexing="ij")
    lf, rf = lg.ravel(), rg.ravel()
    for c, ncls in num_pdf_classes.items():
        for k in range(ncls):
            vals = {PDF_CLASS_KEY: np.full(lf.shape, k), 0: lf, 1: np.full(lf.shape, c), 2: rf}
            res = np.full(lf.shape, -1, dtype=np.int32)
            stack = [(tree_root, np.arange(lf.size))]
            while stack:
                node, idx = stack.pop()
                if node is None or idx.size == 0:
                    continue
                if isinstance(node, ConstantNode):
                    res[idx] = node.pdf
                elif isinstance(node, TableNode):
                    kv = vals[node.key][idx]
                    for val in np.unique(kv):
                        if 0 <= val < len(node.table):
                            stack.append((node.table[val], idx[kv == val]))
                else:
                    m = np.isin(vals[node.key][idx], np.asarray(node.yes_set))
                    stack.append((node.yes, idx[m]))
                    stack.append((node.no, idx[~m]))
            out[c, k] = res.reshape(v, v)
    return out
