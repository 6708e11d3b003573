"""``asr-hf prepare-bn``, ``prepare-swbd`` and the Kaldi data-dir commands.

Thin wrappers over :mod:`asr_hf.data.ldc` and :mod:`asr_hf.data.kaldi_dir`;
heavy imports (lhotse) happen inside the handlers so ``asr-hf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

#: Values of ``asr_hf.data.ldc.Fragments`` (kept here so --help needs no lhotse import).
FRAGMENT_CHOICES = ("unk", "letters", "drop")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-bn", help="prepare 1997 Hub4 English Broadcast News (LDC98S71 + LDC98T28) manifests"
    )
    p.add_argument("--audio-dir", required=True, type=Path, help="LDC98S71 (*.sph)")
    p.add_argument("--transcripts-dir", required=True, type=Path, help="LDC98T28 (*.sgml)")
    p.add_argument("--out", required=True, type=Path, help="manifest directory (replaced)")
    p.add_argument("--eval97-dir", type=Path, help="LDC2002S11 (h4e_evl/h4e_97.sph + .stm): the test set")
    p.add_argument("--dev-fraction", type=float, default=0.02, help="share of speakers held out for dev")
    p.add_argument("--test-fraction", type=float, default=0.02,
                   help="share of speakers held out for test when no --eval97-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fragments", choices=FRAGMENT_CHOICES, default="unk",
                   help="partial words in train/dev become <unk>, their letters, or are dropped")
    p.add_argument("--force", action="store_true", help="redo even when OUT/.done exists")
    p.set_defaults(func=_prepare_bn)

    p = sub.add_parser("prepare-swbd", help="prepare Switchboard-1 (LDC97S62) manifests, eval2000 as test")
    p.add_argument("--audio-dir", required=True, type=Path, help="LDC97S62 (swb1_d*/data/*.sph)")
    p.add_argument("--transcripts-dir", required=True, type=Path, help="swb_ms98_transcriptions")
    p.add_argument("--out", required=True, type=Path, help="manifest directory (replaced)")
    p.add_argument("--eval2000-audio-dir", type=Path, help="LDC2002S09 (hub5e_00/english/*.sph)")
    p.add_argument("--eval2000-transcripts-dir", type=Path, help="LDC2002T43 (reference/english/*.txt)")
    p.add_argument("--dev-utterances", type=int, default=4000,
                   help="dev takes the first conversations up to this many utterances")
    p.add_argument("--fragments", choices=FRAGMENT_CHOICES, default="unk",
                   help="partial words in train/dev become <unk>, their letters, or are dropped")
    p.add_argument("--force", action="store_true", help="redo even when OUT/.done exists")
    p.set_defaults(func=_prepare_swbd)

    p = sub.add_parser("export-kaldi-dir", help="write a Kaldi data directory from lhotse manifests")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cuts", type=Path, help="a CutSet manifest")
    src.add_argument("--recordings", type=Path, help="a RecordingSet manifest (with --supervisions)")
    p.add_argument("--supervisions", type=Path, help="a SupervisionSet manifest (with --recordings)")
    p.add_argument("--out", required=True, type=Path, help="Kaldi data directory (replaced)")
    p.add_argument("--add-speaker-prefix", action="store_true",
                   help="prefix '<speaker>-' to utterance ids that do not start with their speaker")
    p.add_argument("--no-durations", action="store_true", help="do not write reco2dur/utt2dur")
    p.set_defaults(func=_export)

    p = sub.add_parser("import-kaldi-dir", help="read a Kaldi data directory into lhotse manifests")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--out", required=True, type=Path, help="manifest directory")
    p.add_argument("--split", help="manifest name suffix (default: the data dir's name)")
    p.set_defaults(func=_import)

    p = sub.add_parser("validate-kaldi-dir", help="check a Kaldi data directory (like validate_data_dir.sh)")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--no-check-audio", action="store_true", help="do not check that wav.scp files exist")
    p.set_defaults(func=_validate)


def _skip(out: Path, force: bool) -> bool:
    from asr_hf.utils import is_done

    if is_done(out) and not force:
        log.info("%s is done (remove %s/.done or pass --force to redo)", out, out)
        return True
    return False


def _prepare_bn(args: argparse.Namespace) -> int:
    from asr_hf.data.ldc import Fragments, prepare_bn

    if _skip(args.out, args.force):
        return 0
    corpus = prepare_bn(
        args.audio_dir, args.transcripts_dir, args.out, eval97_dir=args.eval97_dir,
        dev_fraction=args.dev_fraction, test_fraction=args.test_fraction, seed=args.seed,
        fragments=Fragments(args.fragments),
    )
    print(corpus.summary())
    return 0


def _prepare_swbd(args: argparse.Namespace) -> int:
    from asr_hf.data.ldc import Fragments, prepare_swbd

    if _skip(args.out, args.force):
        return 0
    corpus = prepare_swbd(
        args.audio_dir, args.transcripts_dir, args.out,
        eval2000_audio_dir=args.eval2000_audio_dir, eval2000_transcripts_dir=args.eval2000_transcripts_dir,
        dev_utterances=args.dev_utterances, fragments=Fragments(args.fragments),
    )
    print(corpus.summary())
    return 0


def _load(path: Path, loader):  # noqa: ANN001
    from asr_hf.utils import DataError

    if not path.is_file():
        raise DataError(str(path), "manifest not found")
    return loader(path)


def _export(args: argparse.Namespace) -> int:
    from lhotse import CutSet, RecordingSet, SupervisionSet

    from asr_hf.data.kaldi_dir import export_kaldi_dir
    from asr_hf.utils import DataError

    if args.cuts is not None:
        cuts = _load(args.cuts, CutSet.from_file)
        recs = {c.recording.id: c.recording for c in cuts if c.has_recording}
        sups = {s.id: s for c in cuts for s in c.supervisions}
        recordings = RecordingSet.from_recordings(recs.values())
        supervisions = SupervisionSet.from_segments(sups.values())
    else:
        if args.supervisions is None:
            raise DataError("--supervisions", "required with --recordings")
        recordings = _load(args.recordings, RecordingSet.from_file)
        supervisions = _load(args.supervisions, SupervisionSet.from_file)
    out = export_kaldi_dir(
        recordings, supervisions, args.out,
        add_speaker_prefix=args.add_speaker_prefix, write_durations=not args.no_durations,
    )
    print(out)
    return 0


def _import(args: argparse.Namespace) -> int:
    from asr_hf.data.kaldi_dir import import_kaldi_dir
    from asr_hf.data.paths import recordings_path, supervisions_path
    from asr_hf.utils import atomic_output

    recordings, supervisions = import_kaldi_dir(args.data_dir)
    split = args.split or args.data_dir.resolve().name
    for path, manifest in ((recordings_path(args.out, split), recordings),
                           (supervisions_path(args.out, split), supervisions)):
        with atomic_output(path) as tmp:
            manifest.to_file(tmp)
    print(f"{split}: {len(supervisions)} utterances, {len(recordings)} recordings -> {args.out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from asr_hf.data.kaldi_dir import validate_kaldi_dir

    problems = validate_kaldi_dir(args.data_dir, check_audio_files=not args.no_check_audio)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"{args.data_dir}: valid Kaldi data directory")
    return 0
