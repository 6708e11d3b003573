"""``asr-hf`` subcommands for graphs, decoding, scoring and result tables::

    asr-hf mkgraph LANG MODEL_DIR [GRAPH_DIR] [--G G.fst] [--self-loop-scale 0.1] [--force]
    asr-hf decode-gmm EXP CUTS [--set dev] [--sweep 0.06,0.08,0.1,0.12,0.15 | --acwt-from EXP/decode_dev]
                      [--graph DIR] [--out DIR] [--export-ark loglikes.ark] [decoder options]
    asr-hf decode-matrices GRAPH MATRICES OUT_DIR (--cuts CUTS | --text TEXT [--utt2spk F])
                      [--pdf-counts COUNTS] [--sweep ... | --acwt-from DIR] [decoder options]
    asr-hf score REF HYP [--utt2spk F] [--out DIR]
    asr-hf compare EXP_ROOT [--plot wer.png] [--out RESULTS.md]

Decoder options: ``--beam 13 --lattice-beam 8 --max-active 7000 --acwt 0.1
--prior-scale 1.0 --jobs N``.  Decoding commands print the ``wer.json`` record
as one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from asr_hf.data.paths import graph_fst, split_of, system_files
from asr_hf.utils.io import redo_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mkgraph", help="build HCLG for a lang dir and a GMM system (Kaldi mkgraph.sh)")
    p.add_argument("lang", type=Path, help="lang dir (L_disambig.fst, words.txt, phones/disambig.int, G.fst)")
    p.add_argument("model_dir", type=Path, help="system dir with final.mdl and tree, e.g. exp/tri1")
    p.add_argument("graph_dir", type=Path, nargs="?", default=None, help="default MODEL_DIR/graph")
    p.add_argument("--G", dest="G", type=Path, default=None, help="grammar FST (default LANG/G.fst)")
    p.add_argument("--transition-scale", type=float, default=1.0)
    p.add_argument("--self-loop-scale", type=float, default=0.1)
    p.add_argument("--force", action="store_true", help="rebuild even if GRAPH_DIR is complete")
    p.set_defaults(func=_mkgraph)

    p = sub.add_parser("decode-gmm", help="decode and score a feature-cut set with a GMM system")
    p.add_argument("exp", type=Path, help="system dir (final.mdl, tree, graph/)")
    p.add_argument("cuts", type=Path, help="feature cuts of the set (e.g. data/mfcc/cuts_dev.jsonl.gz)")
    p.add_argument("--set", dest="set_name", default=None, help="set name (default: from the cuts file name)")
    p.add_argument("--graph", type=Path, default=None, help="graph dir (default EXP/graph)")
    p.add_argument("--out", type=Path, default=None, help="decode dir (default EXP/decode_<set>)")
    p.add_argument("--export-ark", type=Path, default=None, help="also write the GMM log-likelihoods (ark + .scp)")
    _decoder_options(p)
    redo_option(p, _decode_gmm_products, ignore=("jobs",))
    p.set_defaults(func=_decode_gmm)

    p = sub.add_parser("decode-matrices", help="decode and score per-utterance log-likelihoods from a Kaldi ark/scp")
    p.add_argument("graph", type=Path, help="graph dir")
    p.add_argument("matrices", help="ark/scp of (T, num_pdfs) log-likelihoods (or log-posteriors, see --pdf-counts)")
    p.add_argument("out", type=Path, help="decode dir, e.g. exp/dnn_hf/decode_dev")
    refs = p.add_mutually_exclusive_group(required=True)
    refs.add_argument("--cuts", type=Path, help="cuts manifest with reference text and speakers")
    refs.add_argument("--text", type=Path, help="Kaldi text file of references")
    p.add_argument("--utt2spk", type=Path, default=None, help="with --text: per-speaker breakdown")
    p.add_argument(
        "--pdf-counts", type=Path, default=None,
        help="pdf counts ([ c0 c1 ... ]): the matrices are log-posteriors, divide by the priors",
    )  # fmt: skip
    _decoder_options(p)
    redo_option(p, _decode_matrices_products, ignore=("jobs",))
    p.set_defaults(func=_decode_matrices)

    p = sub.add_parser("score", help="WER/SER of a hypothesis text against references")
    p.add_argument("ref", type=Path, help="Kaldi text file or cuts manifest (.jsonl.gz)")
    p.add_argument("hyp", type=Path, help="Kaldi text file of hypotheses")
    p.add_argument("--utt2spk", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="write a decode dir (wer.json, per_utt.txt, ...)")
    p.add_argument("--ignore", default="", help="comma-separated words not scored (e.g. '<unk>')")
    p.set_defaults(func=_score)

    p = sub.add_parser("compare", help="markdown table (and bar chart) of all decode results under an exp tree")
    p.add_argument("exp_root", type=Path)
    p.add_argument("--plot", type=Path, default=None, help="write a bar chart (png/pdf/svg)")
    p.add_argument("--curves", type=Path, default=None,
                   help="write held-out cross-entropy / accuracy vs training time of every DNN (png/pdf/svg)")
    p.add_argument("--out", type=Path, default=None,
                   help="write the whole report here (RESULTS.md: table with WER intervals, paired differences, "
                   "HF speed-up, commands)")
    p.add_argument("--title", default="Results", help="report title")
    p.add_argument("--words", type=Path, default=None,
                   help="the recognition vocabulary (a lang dir's words.txt): adds the errors at out-of-vocabulary "
                   "words (default: EXP_ROOT/../data/lang/words.txt when it exists)")
    p.add_argument("--paired-against", default=None,
                   help="system the paired differences are taken against (default: the best GMM of each set)")
    p.set_defaults(func=_compare)


def _decoder_options(p: argparse.ArgumentParser) -> None:
    from asr_hf.decode.decoder import DecodeConfig

    d = DecodeConfig()
    g = p.add_argument_group("decoder")
    g.add_argument("--beam", type=float, default=d.beam)
    g.add_argument("--lattice-beam", type=float, default=d.lattice_beam)
    g.add_argument("--max-active", type=int, default=d.max_active)
    g.add_argument("--min-active", type=int, default=d.min_active)
    g.add_argument("--acwt", type=float, default=d.acwt, help="acoustic weight (LM weight 1/acwt)")
    g.add_argument("--prior-scale", type=float, default=d.prior_scale)
    g.add_argument("--jobs", type=int, default=0, help="decoding processes (0: one per core)")
    g.add_argument("--ignore", default="", help="comma-separated words not scored (e.g. '<unk>')")
    tune = g.add_mutually_exclusive_group()
    tune.add_argument("--sweep", default=None, help="comma-separated acoustic weights to try; keeps the best (dev)")
    tune.add_argument("--acwt-from", type=Path, default=None, help="use the acwt chosen in this (dev) decode dir")


def _config(args: argparse.Namespace):
    from asr_hf.decode.decoder import DecodeConfig
    from asr_hf.decode.pipeline import acwt_from

    acwt, source = args.acwt, "fixed"
    if args.acwt_from is not None:
        acwt, source = acwt_from(args.acwt_from), f"tuned on {args.acwt_from}"
    cfg = DecodeConfig(
        beam=args.beam, lattice_beam=args.lattice_beam, max_active=args.max_active, min_active=args.min_active,
        acwt=acwt, prior_scale=args.prior_scale, jobs=args.jobs,
    )  # fmt: skip
    sweep = [float(x) for x in args.sweep.split(",") if x] if args.sweep else None
    return cfg, sweep, source


def _tuned_on(args: argparse.Namespace) -> list[Path]:
    """The dev decode whose chosen acwt a test decode uses (an input of that decode)."""
    return [args.acwt_from / "wer.json"] if args.acwt_from is not None else []


def _decode_gmm_products(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    out = args.out if args.out is not None else args.exp / f"decode_{args.set_name or split_of(args.cuts)}"
    graph = args.graph if args.graph is not None else args.exp / "graph"
    outputs = [out] + ([args.export_ark] if args.export_ark is not None else [])
    return outputs, [*system_files(args.exp), graph_fst(graph), args.cuts, *_tuned_on(args)]


def _decode_matrices_products(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    matrices = Path(args.matrices[4:] if args.matrices.startswith(("ark:", "scp:")) else args.matrices)
    refs = [p for p in (args.cuts, args.text, args.utt2spk, args.pdf_counts) if p is not None]
    return [args.out], [graph_fst(args.graph), matrices, *refs, *_tuned_on(args)]


def _mkgraph(args: argparse.Namespace) -> int:
    from asr_hf.decode.graph import GraphConfig, mkgraph

    cfg = GraphConfig(transition_scale=args.transition_scale, self_loop_scale=args.self_loop_scale)
    info = mkgraph(args.lang, args.model_dir, args.graph_dir, G_fst=args.G, config=cfg, force=args.force)
    print(json.dumps({"graph_dir": str(args.graph_dir or args.model_dir / "graph"), **info.to_json()}))
    return 0


def _decode_gmm(args: argparse.Namespace) -> int:
    from asr_hf.decode.gmm_decode import decode_gmm, export_gmm_loglikes

    cfg, sweep, source = _config(args)
    set_name = args.set_name or split_of(args.cuts)
    rec = decode_gmm(
        args.exp, args.cuts, set_name, args.graph, args.out, cfg, acwts=sweep, acwt_source=source,
        ignore_words=_ignored(args.ignore),
    )  # fmt: skip
    if args.export_ark is not None:
        from asr_hf.gmm.fmllr import load_transforms

        out = Path(args.out) if args.out is not None else Path(args.exp) / f"decode_{set_name}"
        trans = out.parent / f"{out.name}.trans.npz"  # a SAT system's test-speaker transforms
        xforms = load_transforms(trans) if trans.is_file() else None
        export_gmm_loglikes(args.exp, args.cuts, args.export_ark, args.export_ark.with_suffix(".scp"), xforms)
    print(json.dumps(_brief(rec)))
    return 0


def _decode_matrices(args: argparse.Namespace) -> int:
    from asr_hf.decode.decoder import priors_from_counts
    from asr_hf.decode.interop import read_matrices
    from asr_hf.decode.pipeline import EvalSet, decode_and_score

    cfg, sweep, source = _config(args)
    refs, speakers = _references(args.cuts or args.text, args.utt2spk)
    log_priors = None
    if args.pdf_counts is not None:
        from asr_hf.gmm.targets import read_pdf_counts

        log_priors = priors_from_counts(read_pdf_counts(args.pdf_counts))
    eval_set = EvalSet(args.out.name, read_matrices(args.matrices), refs, speakers)
    meta = {"matrices": str(args.matrices), **({"pdf_counts": str(args.pdf_counts)} if args.pdf_counts else {})}
    rec = decode_and_score(
        args.graph, args.out, eval_set, cfg, log_priors, acwts=sweep, acwt_source=source, meta=meta,
        ignore_words=_ignored(args.ignore),
    )  # fmt: skip
    print(json.dumps(_brief(rec)))
    return 0


def _score(args: argparse.Namespace) -> int:
    from asr_hf.decode.report import write_decode_dir
    from asr_hf.decode.scoring import read_text, score

    refs, speakers = _references(args.ref, args.utt2spk)
    hyps = read_text(args.hyp)
    result = score(refs, hyps, speakers, _ignored(args.ignore))
    if args.out is not None:
        write_decode_dir(args.out, result, hyps, refs, {"hyp_file": str(args.hyp), "ref_file": str(args.ref)})
    print(result.total.summary())
    if result.missing:
        print(f"{len(result.missing)} reference(s) had no hypothesis (scored as deletions)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from asr_hf.decode.report import collect_results, plot_results, plot_training_curves, results_markdown
    from asr_hf.utils.io import atomic_output

    words = args.words
    if words is None:
        default = Path(args.exp_root).resolve().parent / "data/lang/words.txt"
        words = default if default.is_file() else None
    text = results_markdown(args.exp_root, args.title, args.paired_against, words)
    print(text, end="")
    if args.out is not None:
        with atomic_output(args.out) as tmp:
            tmp.write_text(text)
    if args.plot is not None:
        plot_results(collect_results(args.exp_root), args.plot)
    if args.curves is not None:
        plot_training_curves(args.exp_root, args.curves)
    return 0


def _references(path: Path, utt2spk: Optional[Path]) -> tuple[dict[str, list[str]], Optional[dict[str, str]]]:
    """References (and speakers) from a cuts manifest or a Kaldi text (+ utt2spk) file."""
    from asr_hf.decode.scoring import read_text
    from asr_hf.utils.errors import DataError

    if not path.is_file():
        raise DataError(str(path), "no such file")
    if path.name.endswith((".jsonl.gz", ".jsonl")):
        from lhotse import CutSet

        from asr_hf.gmm.feats import speaker_of

        cuts = CutSet.from_file(path)
        refs = {c.id: c.supervisions[0].text.split() for c in cuts if c.supervisions}
        return refs, {c.id: speaker_of(c) for c in cuts}
    speakers = None
    if utt2spk is not None:
        speakers = {u: s[0] for u, s in read_text(utt2spk).items() if s}
    return read_text(path), speakers


def _ignored(arg: str) -> list[str]:
    return [w for w in arg.split(",") if w]


def _brief(rec: dict) -> dict:
    """The ``wer.json`` record without the per-speaker table, for the console."""
    return {k: v for k, v in rec.items() if k != "per_speaker"}
