"""Approximated-Hessian SGD (``ahsgd``, arXiv 1709.05069) against synchronous data-parallel SGD.

Two gloo processes on the CPU (one torch thread each) train a small MLP (64-H-10, tanh,
softmax cross entropy) on scikit-learn's bundled 8x8 digits (1797 images; pixels / 16),
each process holding half of the images and drawing its own minibatches of ``--batch``.
Methods, all from the same initial weights, same learning rate and momentum:

* ``ddp_sgd``: :class:`torch.nn.parallel.DistributedDataParallel` + SGD: gradients
  all-reduced every step (the synchronous baseline);
* ``ahsgd``: :class:`~asr_hf.optim.ahsgd.ApproxHessianSGD` (``sync_period - 1`` local steps,
  then the multi-secant sync);
* ``ahsgd_no_secant`` (ablation): the same with ``damping = 1e12``, which switches the secant
  correction off: model averaging followed by one SGD step on the averaged gradient.

Every method takes ``--steps`` steps per process (equal samples processed).  The full
training-set loss (both shards) is evaluated every ``--eval-every`` steps (a multiple of
``sync_period``, so the ``ahsgd`` workers hold identical parameters) with the clock stopped;
the clock is rank 0's after a barrier.  Reported:

* ``loss_equal_samples``: each method's loss after ``--steps`` steps, and
  ``ratio_equal_samples = loss(method) / loss(ddp_sgd)`` (< 1: lower loss than DDP);
* ``loss_equal_time``: each method's loss at the wall time ``t_eq`` = the shortest of the
  methods' run times (the last evaluation at or before ``t_eq``), and ``ratio_equal_time``;
* ``time_to_ddp_final_loss``: seconds each method needs to reach ``ddp_sgd``'s final loss and
  ``speedup_vs_ddp = ddp time / method time`` (null when not reached).

Usage::

    python bench/bench_ahsgd.py [--steps 3000] [--sync-period 8] [--lr 0.05]

Prints progress on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_hf.optim.ahsgd import ApproxHessianSGD  # noqa: E402
from asr_hf.optim.distributed import DistReducer, run_local_workers, shard_range  # noqa: E402

METHODS = ("ddp_sgd", "ahsgd", "ahsgd_no_secant")
SYNC_KEYS = ("step_norm", "secant_norm", "disp_rms", "grad_mean_norm", "gram_cond")


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target, dtype=torch.int64)


def make_model(hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))


def _train(method: str, args: dict[str, Any], rank: int, world: int, x_all, t_all, x, t) -> dict[str, Any]:
    import torch.distributed as dist

    model = make_model(args["hidden"], args["seed"])
    reducer = DistReducer()  # times ahsgd's collectives (DDP's run inside its own hooks)
    fwd: nn.Module = model
    if method == "ddp_sgd":
        fwd = nn.parallel.DistributedDataParallel(model)
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=args["lr"], momentum=args["momentum"])
    else:
        opt = ApproxHessianSGD(
            model.parameters(), lr=args["lr"], momentum=args["momentum"], sync_period=args["sync_period"],
            damping=1e12 if method == "ahsgd_no_secant" else args["damping"], max_step_ratio=args["max_step_ratio"],
            reducer=reducer,
        )  # fmt: skip
    gen = torch.Generator().manual_seed(args["seed"] * 1000 + rank)  # same batches for every method
    n_local = x.shape[0]
    perm = torch.randperm(n_local, generator=gen)
    pos = 0

    def full_loss() -> float:
        with torch.no_grad():
            total = F.cross_entropy(model(x_all), t_all, reduction="sum").reshape(1)
        return float(total) / x_all.shape[0]  # x_all is the union of the shards on every rank

    curve = [(0.0, 0, full_loss())]
    sync_stats: list[list[float]] = []
    elapsed = 0.0
    dist.barrier()
    t0 = time.perf_counter()
    for step in range(1, args["steps"] + 1):
        if pos + args["batch"] > n_local:
            perm, pos = torch.randperm(n_local, generator=gen), 0
        idx = perm[pos : pos + args["batch"]]
        pos += args["batch"]
        xb, tb = x[idx], t[idx]

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=False)
            loss = F.cross_entropy(fwd(xb), tb)
            loss.backward()
            return loss

        if method == "ddp_sgd":
            closure()
            opt.step()
        else:
            opt.step(closure)
            st = opt.last_stats()  # type: ignore[attr-defined]
            if st.get("synced") and "step_norm" in st:
                sync_stats.append([st[k] for k in SYNC_KEYS])
        if step % args["eval_every"] == 0 or step == args["steps"]:
            dist.barrier()
            elapsed += time.perf_counter() - t0
            curve.append((elapsed, step, full_loss()))
            dist.barrier()
            t0 = time.perf_counter()
    out: dict[str, Any] = {"curve": curve}
    if isinstance(opt, ApproxHessianSGD):
        out.update(syncs=opt.syncs, fallbacks=opt.fallbacks, capped=opt.capped, comm_seconds=reducer.comm_seconds)
        med = torch.tensor(sync_stats, dtype=torch.float64).median(0).values.tolist() if sync_stats else []
        out["median_sync_stats"] = dict(zip(SYNC_KEYS, med))
    return out


def worker(rank: int, world: int, out_file: str, args: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    x_all, t_all = load_digits()
    g = torch.Generator().manual_seed(12345)
    order = torch.randperm(x_all.shape[0], generator=g)
    x_all, t_all = x_all[order], t_all[order]
    lo, hi = shard_range(x_all.shape[0], world, rank)
    x, t = x_all[lo:hi], t_all[lo:hi]
    results = {}
    for method in args["methods"]:
        results[method] = _train(method, args, rank, world, x_all, t_all, x, t)
        if rank == 0:
            c = results[method]["curve"][-1]
            print(f"[bench_ahsgd] {method}: loss {c[2]:.4f} after {c[1]} steps, {c[0]:.2f} s", file=sys.stderr)
    if rank == 0:
        Path(out_file).write_text(json.dumps(results))


def loss_at(curve: list, t_eq: float) -> float:
    """The loss of the last evaluation at or before ``t_eq`` seconds."""
    return min((c for c in curve if c[0] <= t_eq + 1e-12), key=lambda c: -c[0])[2]


def time_to(curve: list, target: float) -> Optional[float]:
    for sec, _, loss in curve:
        if loss <= target:
            return sec
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000, help="steps per process for every method")
    ap.add_argument("--batch", type=int, default=32, help="minibatch per process")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--sync-period", type=int, default=8)
    ap.add_argument("--damping", type=float, default=1e-3)
    ap.add_argument("--max-step-ratio", type=float, default=4.0)
    ap.add_argument("--eval-every", type=int, default=80, help="a multiple of --sync-period")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.eval_every % a.sync_period:
        ap.error("--eval-every must be a multiple of --sync-period")
    args = {k: v for k, v in vars(a).items()}
    args["methods"] = [m for m in a.methods.split(",") if m]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        out_file = str(Path(d) / "result.json")
        run_local_workers(worker, 2, out_file, args)
        res = json.loads(Path(out_file).read_text())
    base = "ddp_sgd"
    t_eq = min(r["curve"][-1][0] for r in res.values())
    final = {m: r["curve"][-1][2] for m, r in res.items()}
    at_t = {m: loss_at(r["curve"], t_eq) for m, r in res.items()}
    target = final.get(base)
    reach = {m: (time_to(r["curve"], target) if target is not None else None) for m, r in res.items()}
    out: dict[str, Any] = {
        "bench": "ahsgd_vs_ddp_sgd",
        "data": "sklearn digits (1797 x 64), 2 gloo processes x 1 thread, CPU",
        "net": f"64-{a.hidden}-10 tanh",
        "steps_per_process": a.steps,
        "batch_per_process": a.batch,
        "lr": a.lr,
        "momentum": a.momentum,
        "sync_period": a.sync_period,
        "damping": a.damping,
        "max_step_ratio": a.max_step_ratio,
        "initial_loss": round(res[args["methods"][0]]["curve"][0][2], 4),
        "train_seconds": {m: round(r["curve"][-1][0], 2) for m, r in res.items()},
        "loss_equal_samples": {m: round(v, 4) for m, v in final.items()},
        "t_eq_seconds": round(t_eq, 2),
        "loss_equal_time": {m: round(v, 4) for m, v in at_t.items()},
    }
    if base in res:
        out["ratio_equal_samples"] = {m: round(v / final[base], 3) for m, v in final.items()}
        out["ratio_equal_time"] = {m: round(v / at_t[base], 3) for m, v in at_t.items()}
        out["time_to_ddp_final_loss"] = {m: None if v is None else round(v, 2) for m, v in reach.items()}
        tb = reach[base]
        out["speedup_vs_ddp"] = {m: None if v is None or not tb else round(tb / v, 2) for m, v in reach.items()}
    for m in ("ahsgd", "ahsgd_no_secant"):
        if m in res:
            out[f"{m}_syncs_fallbacks_capped"] = [res[m]["syncs"], res[m]["fallbacks"], res[m]["capped"]]
            out[f"{m}_comm_seconds_rank0"] = round(res[m]["comm_seconds"], 3)
            out[f"{m}_median_sync_stats"] = {k: float(f"{v:.3g}") for k, v in res[m]["median_sync_stats"].items()}
    out["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    out["torch"] = torch.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
