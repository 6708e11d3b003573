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

    p = sub.add_parser("speedup", help="time for a run to reach a baseline's final held-out loss (+ WER diff)")
    p.add_argument("--baseline", required=True, type=Path, help="exp dir of the baseline run (e.g. exp/dnn_hf)")
    p.add_argument("--candidates", required=True, nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    p.set_defaults(func=_speedup)

    p = sub.add_parser("nnet-forward", help="write per-utterance pseudo log-likelihoods to a Kaldi ark")
    p.add_argument("--model", required=True, type=Path, help="final.pt")
    p.add_argument("--cuts", required=True, type=Path, help="feature cuts")
    p.add_argument("--ark", required=True, type=Path)
    p.add_argument("--prior-scale", type=float, default=1.0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_forward)


def _train(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from asr_hf.nnet.config import compose
    from asr_hf.nnet.trainer import Trainer

    from hydra.errors import HydraException

    from asr_hf.utils.errors import DataError

    try:
        cfg = compose(args.overrides, config_dir=args.config_dir)
    except HydraException as exc:
        raise DataError("config override", " ".join(str(exc).split())) from None
    if args.print_config:
        print(OmegaConf.to_yaml(cfg))
        return 0
    command = "asr-hf " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    trainer = Trainer(cfg, root=args.root, command=command)
    summary = trainer.train()
    if trainer.is_main:
        print(json.dumps(summary))
    if trainer.dist is not None:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def _speedup(args: argparse.Namespace) -> int:
    from asr_hf.nnet.speedup import compare_runs, speedup_table, to_json
    from asr_hf.utils.io import atomic_output

    results = [compare_runs(args.baseline, c) for c in args.candidates]
    table = speedup_table(results)
    print(table, end="")
    if args.out:
        with atomic_output(args.out) as tmp:
            tmp.write_text(table)
    print(to_json(results))
    return 0


def _forward(args: argparse.Namespace) -> int:
    from lhotse import CutSet

    from asr_hf.nnet.trainer import load_model, pseudo_loglikes, resolve_device
    from asr_hf.utils.io import atomic_output
    from asr_hf.utils.kio import kaldi_io

    device = resolve_device(args.device)
    model, pri = load_model(args.model, device)
    with atomic_output(args.ark) as tmp, open(tmp, "wb") as f:
        for uid, mat in pseudo_loglikes(model, CutSet.from_file(args.cuts), pri, args.prior_scale, device):
            kaldi_io.write_mat(f, mat, key=uid)
    return 0
