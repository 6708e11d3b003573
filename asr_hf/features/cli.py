"""``asr-hf features`` / ``export-feats`` / ``import-feats``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="extract Kaldi-compatible fbank/MFCC + per-speaker CMVN stats")
    p.add_argument("--corpus", required=True, type=Path, help="corpus dir with manifests/cuts_<split>.jsonl.gz")
    p.add_argument("--out", required=True, type=Path, help="feature dir, e.g. data/fbank")
    p.add_argument("--kind", choices=["fbank", "mfcc"], default="fbank")
    p.add_argument("--splits", nargs="+", default=None, help="default: all splits present")
    p.add_argument("--num-mel-bins", type=int, default=None)
    p.add_argument("--sampling-rate", type=int, default=None, help="require this rate (Hz)")
    p.add_argument("--skip-bad", action="store_true", help="skip and report bad audio instead of stopping")
    p.add_argument("--downmix", action="store_true",
                   help="average the channels of multi-channel audio (default: refuse it, naming the file)")
    p.add_argument("--speed-perturb", default="", metavar="F1,F2,...",
                   help="Kaldi-style speed perturbation of the train split, e.g. 0.9,1.0,1.1 (copies are "
                        "new speakers sp<f>-<spk>); default: none")
    p.add_argument("--jobs", type=int, default=None)
    p.set_defaults(func=_features)

    p = sub.add_parser("export-feats", help="write feature cuts as Kaldi ark/scp")
    p.add_argument("--cuts", required=True, type=Path)
    p.add_argument("--ark", required=True, type=Path)
    p.add_argument("--scp", required=True, type=Path)
    p.set_defaults(func=_export)

    p = sub.add_parser("import-feats", help="read Kaldi feats.scp/ark into lhotse feature cuts")
    p.add_argument("--feats", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--name", required=True, help="split name")
    p.add_argument("--data-dir", type=Path, default=None, help="Kaldi data dir with text/utt2spk")
    p.add_argument("--frame-shift", type=float, default=0.01)
    p.set_defaults(func=_import)


def _features(args: argparse.Namespace) -> int:
    from asr_hf.data.cuts import load_cuts, splits_present
    from asr_hf.data.paths import cmvn_ark_path, cmvn_scp_path, cuts_file
    from asr_hf.features.cmvn import compute_cmvn_stats, write_cmvn
    from asr_hf.features.extract import compute_features
    from asr_hf.utils.errors import DataError

    splits = args.splits or splits_present(args.corpus)
    if not splits:
        raise DataError(str(args.corpus), "no manifests/cuts_<split>.jsonl.gz found")
    opts = {} if args.num_mel_bins is None else {"num_mel_bins": args.num_mel_bins}
    factors = _factors(args.speed_perturb)
    for split in splits:
        raw = load_cuts(args.corpus, split)
        if factors and split == "train":
            from asr_hf.data.cuts import speed_perturb

            raw = speed_perturb(raw, factors)
        cuts = compute_features(
            raw, args.kind, args.out, split, jobs=args.jobs,
            sampling_rate=args.sampling_rate, skip_bad=args.skip_bad, downmix=args.downmix, **opts,
        )  # fmt: skip
        cmvn = cmvn_ark_path(args.out, split)
        # the stats belong to the manifest they were computed from: a manifest rewritten
        # after them (features recomputed) makes them stale, as make would see it
        manifest = cuts_file(args.out, split)
        if not cmvn.is_file() or (manifest.is_file() and cmvn.stat().st_mtime < manifest.stat().st_mtime):
            write_cmvn(compute_cmvn_stats(cuts), cmvn, cmvn_scp_path(args.out, split))
    return 0


def _factors(spec: str) -> list[float]:
    from asr_hf.utils.errors import DataError

    try:
        return [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise DataError("--speed-perturb", f"{spec!r} is not a comma-separated list of factors") from None


def _export(args: argparse.Namespace) -> int:
    from lhotse import CutSet

    from asr_hf.features.kaldi_ark import export_features_ark

    export_features_ark(CutSet.from_file(args.cuts), args.ark, args.scp)
    return 0


def _import(args: argparse.Namespace) -> int:
    from asr_hf.features.kaldi_ark import import_features_ark

    import_features_ark(args.feats, args.out, args.name, data_dir=args.data_dir, frame_shift=args.frame_shift)
    return 0
