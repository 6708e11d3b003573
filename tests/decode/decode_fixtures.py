"""A toy lang dir and monophone model whose best paths are worked out by hand.

Lexicon (phones SIL=1 AH=2 B=3 IY=4 S=5 T=6, disambiguation #0=7 #1=8)::

    a    AH
    bee  B IY
    see  S IY
    tea  T IY
    <unk> SPN-free stand-in: SIL

L has Kaldi's optional silence (probability 0.5 at the start and after each
word, ``#1`` on the silence-to-loop arc) and the ``#0:#0`` self-loop; G is the
bigram below (log10 probabilities)::

    <s> a   -0.1      a bee  -0.2      bee </s>  -0.1
    unigram back-off: <s> -0.5, a -0.3, bee -0.3; </s> -2.0

The cheapest word sequence through L o G is therefore ``a bee`` with cost
``0.4 ln 10`` (LM) ``+ 3 ln 2`` (silence choices at the start and after both
words) = 3.00047.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_hf.utils.kaldi import kfst, khg  # noqa: I001  (before kaldilm: the other order deadlocks)
import kaldilm

PHONES = ["<eps>", "SIL", "AH", "B", "IY", "S", "T", "#0", "#1"]
WORDS = ["<eps>", "<unk>", "a", "bee", "see", "tea", "#0", "<s>", "</s>"]
LEXICON = {"<unk>": ["SIL"], "a": ["AH"], "bee": ["B", "IY"], "see": ["S", "IY"], "tea": ["T", "IY"]}
BEST_WORDS = ["a", "bee"]
BEST_COST = 0.4 * math.log(10) + 3 * math.log(2)

ARPA = """\\data\\
ngram 1=6
ngram 2=3

\\1-grams:
-1.0 <s> -0.5
-2.0 </s>
-0.8 a -0.3
-1.0 bee -0.3
-1.0 see -0.3
-1.2 tea -0.3

\\2-grams:
-0.1 <s> a
-0.2 a bee
-0.1 bee </s>

\\end\\
"""

_3STATE = (
    "<State> 0 <PdfClass> 0 <Transition> 0 0.75 <Transition> 1 0.25 </State>\n"
    "<State> 1 <PdfClass> 1 <Transition> 1 0.75 <Transition> 2 0.25 </State>\n"
    "<State> 2 <PdfClass> 2 <Transition> 2 0.75 <Transition> 3 0.25 </State>\n"
    "<State> 3 </State>\n"
)
TOPO = (
    "<Topology>\n<TopologyEntry>\n<ForPhones>\n2 3 4 5 6\n</ForPhones>\n" + _3STATE + "</TopologyEntry>\n"
    "<TopologyEntry>\n<ForPhones>\n1\n</ForPhones>\n" + _3STATE + "</TopologyEntry>\n</Topology>\n"
)


def lexicon_fst_text() -> str:
    """L_disambig with optional silence, in AT&T text form."""
    pid = {p: i for i, p in enumerate(PHONES)}
    wid = {w: i for i, w in enumerate(WORDS)}
    half = math.log(2)
    start, loop, sil = 0, 1, 2
    lines = [f"{start} {loop} 0 0 {half}", f"{start} {sil} {pid['SIL']} 0 {half}", f"{sil} {loop} {pid['#1']} 0"]
    nxt = 3
    for w, pron in LEXICON.items():
        s = loop
        for k, p in enumerate(pron):
            olabel = wid[w] if k == 0 else 0
            if k == len(pron) - 1:
                lines += [f"{s} {loop} {pid[p]} {olabel} {half}", f"{s} {sil} {pid[p]} {olabel} {half}"]
            else:
                lines.append(f"{s} {nxt} {pid[p]} {olabel}")
                s, nxt = nxt, nxt + 1
    lines += [f"{loop} {loop} {pid['#0']} {wid['#0']}", f"{loop}"]
    return "\n".join(lines) + "\n"


@dataclass
class ToyLang:
    path: Path
    L_disambig: "kfst.StdVectorFst"
    G: "kfst.StdVectorFst"
    word_ids: dict[str, int]
    phone_ids: dict[str, int]
    disambig: list[int]


def write_toy_lang(path: Path) -> ToyLang:
    """Write the toy lang dir (Kaldi layout) under ``path``."""
    (path / "phones").mkdir(parents=True, exist_ok=True)
    (path / "phones.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(PHONES)))
    (path / "words.txt").write_text("".join(f"{w} {i}\n" for i, w in enumerate(WORDS)))
    disambig = [PHONES.index("#0"), PHONES.index("#1")]
    (path / "phones" / "disambig.int").write_text("".join(f"{i}\n" for i in disambig))
    (path / "topo").write_text(TOPO)
    L = kfst.compile(lexicon_fst_text())
    kfst.arcsort(L, sort_type="olabel")
    L.write(str(path / "L_disambig.fst"))
    (path / "lm.arpa").write_text(ARPA)
    G_text = kaldilm.arpa2fst(str(path / "lm.arpa"), disambig_symbol="#0", read_symbol_table=str(path / "words.txt"))
    G = kfst.compile(G_text)
    kfst.arcsort(G, sort_type="ilabel")
    G.write(str(path / "G.fst"))
    return ToyLang(path, L, G, {w: i for i, w in enumerate(WORDS)}, {p: i for i, p in enumerate(PHONES)}, disambig)


@dataclass
class ToyModel:
    topo: "khg.HmmTopology"
    tree: "khg.ContextDependency"
    trans_model: "khg.TransitionModel"


def make_toy_model() -> ToyModel:
    topo = khg.HmmTopology()
    topo.read(TOPO)
    tree = khg.monophone_context_dependency(topo.phones, topo.get_phone_to_num_pdf_classes())
    return ToyModel(topo, tree, khg.TransitionModel(tree, topo))


def alignment_for(lang: ToyLang, model: ToyModel, words: list[str], num_frames: int, seed: int = 1) -> list[int]:
    """A transition-id sequence (one per frame) whose word sequence is ``words``."""
    opts = khg.TrainingGraphCompilerOptions(transition_scale=1.0, self_loop_scale=1.0, reorder=True)
    compiler = khg.TrainingGraphCompiler(model.trans_model, model.tree, lang.L_disambig, lang.disambig, opts)
    graph = compiler.compile_graph_from_text([lang.word_ids[w] for w in words])
    ok, path = kfst.equal_align(graph, num_frames, seed)
    assert ok
    ok, tids, out_words, _ = kfst.get_linear_symbol_sequence(path)
    assert ok and [WORDS[w] for w in out_words] == words and len(tids) == num_frames
    return list(tids)


def one_hot_loglikes(pdfs: np.ndarray, num_pdfs: int, off: float = -30.0) -> np.ndarray:
    """Log-likelihoods 0 on the given pdf per frame and ``off`` elsewhere, shape ``(T, num_pdfs)``."""
    mat = np.full((len(pdfs), num_pdfs), off, dtype=np.float32)
    mat[np.arange(len(pdfs)), pdfs] = 0.0
    return mat


def make_toy_triphone_model() -> ToyModel:
    """A context-width-3 tree: one pdf per (phone, HMM state), except that IY's pdfs
    depend on the left phone (after B vs. after anything else)."""
    from asr_hf.gmm.kaldi_format import ConstantNode, SplitNode, TableNode, context_dependency_bytes
    from asr_hf.gmm.kaldi_format import context_dependency_from_bytes

    pdf = iter(range(1000))

    def states() -> TableNode:  # key -1: the HMM state's pdf class
        return TableNode(-1, [ConstantNode(next(pdf)) for _ in range(3)])

    iy, b = PHONES.index("IY"), PHONES.index("B")
    table = [None] + [
        SplitNode(0, (b,), states(), states()) if p == iy else states() for p in range(1, PHONES.index("#0"))
    ]
    tree = context_dependency_from_bytes(context_dependency_bytes(TableNode(1, table), 3, 1))
    topo = khg.HmmTopology()
    topo.read(TOPO)
    return ToyModel(topo, tree, khg.TransitionModel(tree, topo))
