"""``asr-hf`` subcommands of the GMM-HMM stage (thin wrappers over the library)::

    asr-hf train-mono CUTS LANG EXP [--jobs N] [--totgauss 1000] [--num-iters 40] [--boost-silence 1.0]
    asr-hf train-tri  CUTS LANG SRC_EXP EXP [--num-leaves 2000] [--totgauss 10000] [--num-iters 35] ...
    asr-hf train-lda-mllt CUTS LANG SRC_EXP EXP [--num-leaves 2500] [--totgauss 15000] [--dim 40] [--splice 3]
                                                [--mllt-iters 2,4,6,12] ...
    asr-hf train-sat  CUTS LANG SRC_EXP EXP [--num-leaves 2500] [--totgauss 15000] [--fmllr-iters 2,4,6,12] ...
    asr-hf align      CUTS LANG EXP [--split NAME] [--out DIR] [--jobs N]   (SAT systems: two passes)
    asr-hf import-kaldi-ali ALI FEATS OUT_DIR --split NAME [--data-dir D] [--num-pdfs N] [--kaldi-exp E]

``CUTS`` is a feature-cut manifest (comma-separated for several).  Each
command prints one JSON line with its summary.
"""

from __future__ import annotations

import argparse
import json

from asr_hf.data.paths import split_of
from asr_hf.gmm.feats import FeaturePipeline


def _cuts(arg: str) -> list[str]:
    return [p for p in arg.split(",") if p]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--boost-silence", type=float, default=1.0, help="silence likelihood factor in alignment")
    p.add_argument("--beam", type=float, default=10.0)
    p.add_argument("--retry-beam", type=float, default=40.0)


def _tree_options(p: argparse.ArgumentParser, num_leaves: int, totgauss: int) -> None:
    p.add_argument("--num-leaves", type=int, default=num_leaves)
    p.add_argument("--totgauss", type=int, default=totgauss)
    p.add_argument("--num-iters", type=int, default=35)
    p.add_argument("--max-iter-inc", type=int, default=25)
    p.add_argument("--realign-iters", default="10,20,30")
    p.add_argument("--min-leaf-count", type=float, default=100.0, help="frames each side of a split must keep")
    p.add_argument("--cluster-thresh", type=float, default=-1.0, help="leaf merge threshold (-1: smallest split)")
    p.add_argument("--questions", choices=("auto", "phonetic", "both"), default="auto")


def _ints(arg: str) -> tuple[int, ...]:
    return tuple(int(x) for x in arg.split(",") if x)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-mono", help="flat-start monophone GMM-HMM training (train_mono.sh)")
    p.add_argument("cuts", help="training feature cuts (comma-separated list allowed)")
    p.add_argument("lang", help="lang directory")
    p.add_argument("exp", help="output experiment directory, e.g. exp/mono")
    p.add_argument("--totgauss", type=int, default=1000)
    p.add_argument("--num-iters", type=int, default=40)
    p.add_argument("--max-iter-inc", type=int, default=30)
    p.add_argument("--norm-vars", action="store_true", help="CMVN also normalises variances")
    _common(p)
    p.set_defaults(func=_train_mono)

    p = sub.add_parser("train-tri", help="tied-triphone training with a new decision tree (train_deltas.sh)")
    p.add_argument("cuts")
    p.add_argument("lang")
    p.add_argument("src", help="source system with ali/ (e.g. exp/mono)")
    p.add_argument("exp", help="output experiment directory, e.g. exp/tri1")
    _tree_options(p, num_leaves=2000, totgauss=10000)
    _common(p)
    p.set_defaults(func=_train_tri)

    p = sub.add_parser("train-lda-mllt", help="LDA+MLLT tied-triphone training on spliced features (train_lda_mllt.sh)")
    p.add_argument("cuts")
    p.add_argument("lang")
    p.add_argument("src", help="source system with ali/ (e.g. exp/tri1): its pdfs are the LDA classes")
    p.add_argument("exp", help="output experiment directory, e.g. exp/tri2")
    _tree_options(p, num_leaves=2500, totgauss=15000)
    p.add_argument("--splice", type=int, default=3, help="+-context frames spliced before the LDA")
    p.add_argument("--dim", type=int, default=40, help="LDA output dimension")
    p.add_argument("--mllt-iters", default="2,4,6,12", help="EM iterations that re-estimate MLLT")
    p.add_argument("--silence-weight", type=float, default=0.0, help="weight of silence frames in LDA/MLLT stats")
    _common(p)
    p.set_defaults(func=_train_lda_mllt)

    p = sub.add_parser("dump-gmm-feats", help="a GMM system's (speaker-adapted) input features as DNN features "
                                             "(make_fmllr_feats.sh)")
    p.add_argument("exp", help="GMM system, e.g. exp/tri3")
    p.add_argument("cuts", help="MFCC feature cuts, e.g. data/mfcc/cuts_dev.jsonl.gz")
    p.add_argument("--out", required=True, help="output feature dir, e.g. data/fmllr_tri3")
    p.add_argument("--split", default=None, help="split name (default: from the cuts file name)")
    p.add_argument("--trans", default=None, help="speakers' fMLLR transforms (default: EXP/trans_train.npz for "
                                                 "train, EXP/decode_<split>.trans.npz otherwise)")
    p.set_defaults(func=_dump_gmm_feats)

    p = sub.add_parser("train-sat", help="speaker-adaptive training with per-speaker fMLLR (train_sat.sh)")
    p.add_argument("cuts")
    p.add_argument("lang")
    p.add_argument("src", help="source LDA+MLLT system with ali/ (e.g. exp/tri2)")
    p.add_argument("exp", help="output experiment directory, e.g. exp/tri3")
    _tree_options(p, num_leaves=2500, totgauss=15000)
    p.add_argument("--fmllr-iters", default="2,4,6,12", help="EM iterations that re-estimate the transforms")
    p.add_argument("--fmllr-min-count", type=float, default=50.0, help="frames a speaker needs for a transform")
    p.add_argument("--silence-weight", type=float, default=0.0, help="weight of silence frames in fMLLR stats")
    _common(p)
    p.set_defaults(func=_train_sat)

    p = sub.add_parser("align", help="align a split with a trained system (align_si.sh) -> pdf_ali cuts")
    p.add_argument("cuts")
    p.add_argument("lang")
    p.add_argument("exp", help="system to align with (final.mdl, tree)")
    p.add_argument("--split", default=None, help="split name (default: from the cuts file name)")
    p.add_argument("--out", default=None, help="output dir (default: EXP/ali)")
    p.add_argument("--force", action="store_true", help="redo even if complete")
    _common(p)
    p.set_defaults(func=_align)

    p = sub.add_parser("import-kaldi-ali", help="Kaldi pdf alignments + features (ark/scp) -> pdf_ali cuts")
    p.add_argument("ali", help="ali-to-pdf output (ark/scp, .gz ok; comma-separated list allowed)")
    p.add_argument("feats", help="Kaldi feats.scp or .ark")
    p.add_argument("out", help="output alignment dir, e.g. exp/kaldi_tri3/ali")
    p.add_argument("--split", required=True)
    p.add_argument("--data-dir", default=None, help="Kaldi data dir (text, utt2spk)")
    p.add_argument("--num-pdfs", type=int, default=None)
    p.add_argument("--kaldi-exp", default=None,
                   help="Kaldi exp dir (binary final.mdl + tree): ALI holds transition-ids to map to pdfs")
    p.set_defaults(func=_import)


def _align_opts(args):
    from asr_hf.gmm.align import AlignOptions

    return AlignOptions(beam=args.beam, retry_beam=args.retry_beam, boost_silence=args.boost_silence)


def _dump_gmm_feats(args) -> int:
    from asr_hf.gmm.dump import dump_gmm_features

    split = args.split or split_of(args.cuts)
    print(dump_gmm_features(args.exp, args.cuts, args.out, split, args.trans))
    return 0


def _train_mono(args) -> int:
    from asr_hf.gmm.mono import MonoConfig, train_mono

    cfg = MonoConfig(
        num_iters=args.num_iters, max_iter_inc=args.max_iter_inc, totgauss=args.totgauss,
        boost_silence=args.boost_silence, beam=args.beam, retry_beam=args.retry_beam, jobs=args.jobs,
        pipeline=FeaturePipeline(norm_vars=args.norm_vars),
    )  # fmt: skip
    system = train_mono(args.lang, _cuts(args.cuts), args.exp, cfg)
    print(json.dumps({"exp": args.exp, **system.summary()}))
    return 0


def _tri_options(args) -> dict:
    from asr_hf.gmm.tree import TreeConfig

    return dict(
        num_leaves=args.num_leaves, totgauss=args.totgauss, num_iters=args.num_iters,
        max_iter_inc=args.max_iter_inc, realign_iters=_ints(args.realign_iters),
        boost_silence=args.boost_silence, beam=args.beam, retry_beam=args.retry_beam, jobs=args.jobs,
        tree=TreeConfig(min_leaf_count=args.min_leaf_count, cluster_thresh=args.cluster_thresh, questions=args.questions),
    )  # fmt: skip


def _train_tri(args) -> int:
    from asr_hf.gmm.tri import TriConfig, train_tri

    system = train_tri(args.lang, _cuts(args.cuts), args.src, args.exp, TriConfig(**_tri_options(args)))
    print(json.dumps({"exp": args.exp, **system.summary()}))
    return 0


def _train_lda_mllt(args) -> int:
    from asr_hf.gmm.lda_mllt import LdaMlltConfig, train_lda_mllt

    cfg = LdaMlltConfig(**_tri_options(args), splice=args.splice, dim=args.dim, mllt_iters=_ints(args.mllt_iters),
                        silence_weight=args.silence_weight)  # fmt: skip
    system = train_lda_mllt(args.lang, _cuts(args.cuts), args.src, args.exp, cfg)
    print(json.dumps({"exp": args.exp, **system.summary()}))
    return 0


def _train_sat(args) -> int:
    from asr_hf.gmm.sat import SatConfig, train_sat

    cfg = SatConfig(**_tri_options(args), fmllr_iters=_ints(args.fmllr_iters), fmllr_min_count=args.fmllr_min_count,
                    silence_weight=args.silence_weight)  # fmt: skip
    system = train_sat(args.lang, _cuts(args.cuts), args.src, args.exp, cfg)
    print(json.dumps({"exp": args.exp, **system.summary()}))
    return 0


def _align(args) -> int:
    from asr_hf.gmm.aligner import align

    cuts = _cuts(args.cuts)
    if len(cuts) != 1:
        raise SystemExit("align takes one cut manifest")
    summary = align(args.exp, args.lang, cuts[0], args.split or split_of(cuts[0]), out_dir=args.out,
                    jobs=args.jobs, opts=_align_opts(args), force=args.force)  # fmt: skip
    print(json.dumps(summary))
    return 0


def _import(args) -> int:
    from asr_hf.gmm.kaldi_import import import_kaldi_alignments

    cuts = import_kaldi_alignments(
        _cuts(args.ali), args.feats, args.out, args.split, data_dir=args.data_dir,
        num_pdfs=args.num_pdfs, kaldi_exp=args.kaldi_exp,
    )  # fmt: skip
    print(json.dumps({"out": args.out, "split": args.split, "utterances": len(cuts)}))
    return 0
