"""Training throughput and accuracy of float32 vs bfloat16 autocast (and TF32 on CUDA).

The trainer's ``trainer.bf16`` / ``trainer.tf32`` switches are measured here, not
assumed: the same sigmoid DNN (the CPU demo's 360-3x256 shape by default, or the
papers' ``--hidden 1024 --layers 6``) is trained with SGD (momentum 0.9) on the same
synthetic spliced-frame data (teacher labels) for ``--steps`` minibatches in each mode,
interleaved over ``--repeats`` rounds; reported are the median frames/s of the timed
steps and the final training loss, with the speed ratio against float32 from this run.

    python bench/bench_precision.py --quick               # CPU, ~1 min
    python bench/bench_precision.py --device cuda --hidden 1024 --layers 6

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def make_model(args, device):
    torch.manual_seed(0)
    layers, d = [], args.input_dim
    for _ in range(args.layers):
        layers += [nn.Linear(d, args.hidden), nn.Sigmoid()]
        d = args.hidden
    return nn.Sequential(*layers, nn.Linear(d, args.pdfs)).to(device)


def run(mode: str, x, t, args, device) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    model = make_model(args, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    bf16 = mode == "bf16"
    rates, loss = [], float("nan")
    for step in range(args.steps + args.warmup):
        idx = torch.randint(0, x.shape[0], (args.batch,), generator=g).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = F.cross_entropy(model(x[idx]), t[idx])
        out.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            rates.append(args.batch / (time.perf_counter() - t0))
        loss = float(out.detach())
    with torch.no_grad():  # full-data loss in float32
        full = float(F.cross_entropy(model(x[:20000]), t[:20000]))
    return {"frames_per_s": statistics.median(rates), "last_batch_loss": loss, "train_loss": full}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--input-dim", type=int, default=360)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--pdfs", type=int, default=400)
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="60 steps, 1 round")
    args = p.parse_args()
    if args.quick:
        args.steps, args.repeats = 60, 1
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.frames, args.input_dim, generator=g)
    t = (x @ torch.randn(args.input_dim, args.pdfs, generator=g)).argmax(1)
    x, t = x.to(device), t.to(device)
    modes = ["fp32", "bf16"] + (["tf32"] if device.type == "cuda" else [])
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for m in modes:
            runs[m].append(run(m, x, t, args, device))
    res = {}
    for m, rs in runs.items():
        res[m] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
    for m in modes:
        res[m]["speed_vs_fp32"] = res[m]["frames_per_s"] / res["fp32"]["frames_per_s"]
        print(f"{m}: {res[m]['frames_per_s']:.0f} frames/s ({res[m]['speed_vs_fp32']:.2f}x fp32), "
              f"train loss after {args.steps + args.warmup} steps {res[m]['train_loss']:.4f}", file=sys.stderr)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(json.dumps({"bench": "precision", "device": name, "threads": torch.get_num_threads(), "hidden": args.hidden,
                      "layers": args.layers, "batch": args.batch, "steps": args.steps, "results": res}))


if __name__ == "__main__":
    main()
