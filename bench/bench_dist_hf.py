"""Time per data-parallel HF iteration and its communication share, 1 vs P processes.

Every configuration runs the same HF iterations on the same synthetic frame data
(random spliced inputs, teacher-network labels over ``--pdfs`` classes) with a fixed
amount of work per iteration: gradient on all frames, ``--cg-iters`` CG products on
the curvature sample (progress test off), held-out loss at the chosen iterates.  A
P-process run shards the frames by rank (:class:`ShardedSource`) and sums every
gradient, product and loss with a gloo all-reduce; the per-process thread count is
``--threads-total / P`` so all configurations use the same cores.  Also reported: the
all-reduce time of one parameter-sized vector measured on its own, the number that a
multi-node estimate needs (see ``bench_allreduce_estimate.py``).

    python bench/bench_dist_hf.py --quick          # ~1 min on a 2-core CPU
    python bench/bench_dist_hf.py --procs 1,2 --hidden 512 --layers 4
    python bench/bench_dist_hf.py --device cuda --procs 1,2,4 --hidden 1024 --layers 6 --frames 1000000
        # several processes sharing one GPU (gloo with CUDA tensors: NCCL refuses a shared GPU)

Ends with one JSON line: per configuration the median iteration time, its
gradient / CG / held-out / communication seconds, the communication share, and the
speed-up of each P over one process (a ratio from this one run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from asr_hf.optim.base import LocalReducer, LossKind, SampledData, TensorSource  # noqa: E402
from asr_hf.optim.distributed import DistReducer, ShardedSource, run_local_workers, shard_range  # noqa: E402
from asr_hf.optim.registry import build_optimizer  # noqa: E402


def make_problem(args):
    g = torch.Generator().manual_seed(0)
    n = args.frames + args.heldout
    x = torch.randn(n, args.input_dim, generator=g)
    teacher = torch.randn(args.input_dim, args.pdfs, generator=g)
    t = (x @ teacher).argmax(1)
    return x, t


def make_model(args):
    torch.manual_seed(0)
    layers, d = [], args.input_dim
    for _ in range(args.layers):
        layers += [nn.Linear(d, args.hidden), nn.Sigmoid()]
        d = args.hidden
    return nn.Sequential(*layers, nn.Linear(d, args.pdfs))


def run_hf(args, world: int, rank: int, reducer) -> dict:
    device = torch.device(args.device)
    x, t = make_problem(args)
    x, t = x.to(device), t.to(device)
    parts = []
    for lo, hi in ((0, args.frames), (args.frames, args.frames + args.heldout)):
        a, b = shard_range(hi - lo, world, rank)
        parts.append(ShardedSource.from_reducer(TensorSource(x[lo + a : lo + b], t[lo + a : lo + b]), reducer))
    data = SampledData(*parts)
    model = make_model(args).to(device)
    opt = build_optimizer(
        "hf", model, LossKind.CROSS_ENTROPY, reducer=reducer, curv_fraction=args.curv_fraction,
        cg_max_iters=args.cg_iters, cg_progress_tol=0.0, chunk_size=args.chunk, initial_damping=0.01, seed=0,
    )  # fmt: skip
    rows = []
    for it in range(args.iters + 1):
        c0 = getattr(reducer, "comm_seconds", 0.0)
        t0 = time.perf_counter()
        st = opt.step(data)
        wall = time.perf_counter() - t0
        if it == 0:  # warm-up (allocations, thread pools)
            continue
        # frames through the network per iteration (global): gradient sample + one pass over the
        # curvature sample per CG product (the forward state is cached across products)
        frames = st["grad_samples"] + st["cg_iters"] * st["curv_samples"]
        rows.append({"wall": wall, "grad": st["time_gradient"], "cg": st["time_cg"], "heldout": st["time_heldout"],
                     "comm": getattr(reducer, "comm_seconds", 0.0) - c0, "cg_iters": st["cg_iters"],
                     "frames_per_s": frames / wall})  # fmt: skip
    # one parameter-sized all-reduce on its own (float32), median of 10
    vec = torch.randn(sum(p.numel() for p in model.parameters()), device=device)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        reducer.all_reduce_(vec)
        times.append(time.perf_counter() - t0)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["allreduce_param_vector_s"] = statistics.median(times)
    med["params"] = vec.numel()
    return med


def _worker(rank: int, world: int, args, out_dir: str) -> None:
    torch.set_num_threads(max(1, args.threads_total // world))
    res = run_hf(args, world, rank, DistReducer())
    if rank == 0:
        with open(os.path.join(out_dir, f"world{world}.json"), "w") as f:
            json.dump(res, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", default="1,2", help="process counts to compare")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (all processes share GPU 0)")
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--heldout", type=int, default=5_000)
    p.add_argument("--input-dim", type=int, default=360)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--pdfs", type=int, default=400)
    p.add_argument("--curv-fraction", type=float, default=0.05)
    p.add_argument("--cg-iters", type=int, default=20)
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads-total", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quick", action="store_true", help="30k frames, 2 iterations")
    args = p.parse_args()
    if args.quick:
        args.frames, args.iters = 30_000, 2
    procs = [int(v) for v in args.procs.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as d:
        for world in procs:
            if world == 1:  # the plain single-process path (no process group at all)
                torch.set_num_threads(args.threads_total)
                results["1"] = run_hf(args, 1, 0, LocalReducer())
            else:
                run_local_workers(_worker, world, args, d)
                with open(os.path.join(d, f"world{world}.json")) as f:
                    results[str(world)] = json.load(f)
    for world, r in results.items():
        r["comm_share"] = r["comm"] / r["wall"]
        if "1" in results:
            r["speedup_vs_1"] = results["1"]["wall"] / r["wall"]
        print(f"{world} process(es): {r['wall']:.2f} s/iter, {r['frames_per_s']:.0f} frames/s (grad {r['grad']:.2f}, cg {r['cg']:.2f}, heldout "
              f"{r['heldout']:.2f}, comm {r['comm']:.3f} = {100 * r['comm_share']:.1f}%), "
              f"all-reduce of {r['params']} floats {1e3 * r['allreduce_param_vector_s']:.2f} ms", file=sys.stderr)
    print(json.dumps({"bench": "dist_hf", "frames": args.frames, "hidden": args.hidden, "layers": args.layers,
                      "pdfs": args.pdfs, "cg_iters": args.cg_iters, "threads_total": args.threads_total,
                      "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
                      "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
