"""``asr-hf train-am`` (Hydra overrides) and ``asr-hf nnet-forward``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-am",
        help="train the hybrid DNN acoustic model; trailing arguments are Hydra overrides "
        "(e.g. optim=hf_lbfgs_sampled model=dnn_small trainer.max_iters=10)",
    )
    p.add_argument("--root", type=Path, default=Path("."), help="recipe dir the config paths are relative to")
    p.add_argument("--config-dir", default=None, help="Hydra config dir (default: the repo's conf/)")
    p.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "speedup",
        help="time and work for HF variants to reach baseline HF's converged held-out loss, with WER "
        "differences (paired-bootstrap CI), per seed and median over seeds",
    )
    p.add_argument("exp_root", type=Path, help="exp dir holding dnn_<optimizer>[_s<seed>] runs")
    p.add_argument("--baseline", default="hf", help="baseline optimizer name (exp/dnn_<name>[_s<seed>])")
    p.add_argument("--candidates", required=True, nargs="+", help="candidate optimizer names")
    p.add_argument("--target", type=float, default=None,
                   help="held-out CE target (default: each baseline seed's final, i.e. converged, loss)")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown tables here")
    p.set_defaults(func=_speedup)

    p = sub.add_parser("nnet-forward", help="write per-utterance pseudo log-likelihoods to a Kaldi ark")
    p.add_argument("--model", required=True, type=Path, help="final.pt")
    p.add_argument("--cuts", required=True, type=Path, help="feature cuts")
    p.add_argument("--ark", required=True, type=Path)
    p.add_argument("--prior-scale", type=float, default=1.0)
    p.add_argument("--device", default="auto")
    from asr_hf.utils.io import redo_option

    redo_option(p, lambda a: ([a.ark], [a.model, a.cuts]), ignore=("device",))
    p.set_defaults(func=_forward)


def _train(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from hydra.errors import HydraException

    from asr_hf.nnet.config import compose, explain_override_error
    from asr_hf.nnet.trainer import Trainer

    try:
        cfg = compose(args.overrides, config_dir=args.config_dir)
    except HydraException as exc:
        raise explain_override_error(exc, args.overrides, args.config_dir) from None
    if args.print_config:
        print(OmegaConf.to_yaml(cfg))
        return 0
    from asr_hf.nnet.checkpoint import finished_run

    done = finished_run(cfg, args.root)
    if done is not None:
        print(f"asr-hf train-am: {done} holds a finished run of this config (final.pt, train_summary.json); "
              "skipped (trainer.resume=false trains again)", file=sys.stderr)
        return 0
    command = "asr-hf " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    trainer = Trainer(cfg, root=args.root, command=command)
    summary = trainer.train()
    if trainer.is_main:
        print(json.dumps(summary))
    trainer.close()
    return 0


def _speedup(args: argparse.Namespace) -> int:
    from asr_hf.nnet.speedup import compare_seeds, seed_table, speedup_table, to_json
    from asr_hf.utils.io import atomic_output

    results, summaries = compare_seeds(args.exp_root, args.baseline, args.candidates, args.target)
    what = f"held-out cross-entropy {args.target}" if args.target is not None else (
        f"each seed's final `{args.baseline}` held-out cross-entropy (converged where its stop reason says so)")
    text = (
        f"Target: {what}. Speed-up = baseline time "
        "to target / candidate time to target (a miss counts as 0x); work ratio = baseline / candidate "
        "gradient + curvature examples to the target.\n\n"
        + seed_table(summaries) + "\nPer seed:\n\n" + speedup_table(results)
    )
    print(text, end="")
    if args.out:
        with atomic_output(args.out) as tmp:
            tmp.write_text(text)
    print(to_json(results, summaries))
    return 0


def _forward(args: argparse.Namespace) -> int:
    from lhotse import CutSet

    from asr_hf.nnet.inference import forward_loglikes, load_model, resolve_device
    from asr_hf.utils.io import atomic_output
    from asr_hf.utils.kio import kaldi_io

    from asr_hf.utils.errors import DataError

    device = resolve_device(args.device)
    model, pri = load_model(args.model, device)
    if not args.cuts.is_file():
        raise DataError(str(args.cuts), "not found")
    cuts = CutSet.from_file(args.cuts)
    first = next(iter(cuts), None)
    if first is None:
        raise DataError(str(args.cuts), "no cuts")
    if not first.has_features or first.num_features != model.feat_dim:
        dim = first.num_features if first.has_features else "no"
        raise DataError(str(args.cuts), f"{dim}-dimensional features, model {args.model} takes {model.feat_dim}")
    # the ark is renamed into place only when every utterance gave finite scores
    with atomic_output(args.ark) as tmp, open(tmp, "wb") as f:
        for uid, mat in forward_loglikes(model, cuts, pri, args.prior_scale, device):
            kaldi_io.write_mat(f, mat, key=uid)
    return 0
