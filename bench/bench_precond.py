"""CG iterations to a fixed relative residual on an ill-conditioned GGN system:
no preconditioner vs Martens' diagonal vs L-BFGS (flexible PCG).

Set-up (what one HF iteration late in training solves):

1. a sigmoid DNN with softmax cross-entropy on teacher-generated labels is trained
   for ``--pretrain-steps`` HF iterations with the L-BFGS preconditioner and pairs
   kept across iterations (``hf_lbfgs``); after it, the preconditioner holds the
   ``(s, (G + lambda_prev I) s)`` pairs of the previous iteration's CG run;
2. the measured system is ``(G_B + lambda I) p = -g`` with ``G_B`` the GGN on a fresh
   curvature sample ``B``, ``g`` the full-data gradient and small ``lambda`` values
   (``--dampings``); every solver runs until ``|r| <= rtol |b|`` (Martens' progress
   rule off).

Preconditioners:

* ``none``: plain CG;
* ``diagonal``: ``(F + lambda)^0.75``, ``F`` the empirical-Fisher diagonal (Martens 2010);
* ``lbfgs_in_cg``: L-BFGS from the current solve's own CG pairs only (flexible PCG);
* ``lbfgs``: the ``hf_lbfgs`` configuration: the previous HF iteration's pairs
  (damping-shifted to ``lambda``), updated inside CG (flexible PCG);
* ``lbfgs_fixed``: the previous iteration's pairs, fixed during the solve (plain PCG);
* ``lbfgs_current_theta_pairs`` (control): pairs from a solve at the current theta and
  lambda on another curvature sample and another gradient sample, fixed during the
  solve: separates the preconditioner itself from the staleness of carried-over pairs.

Reports iterations and seconds per method and the ratios ``none / method`` (> 1 means
fewer iterations than plain CG).  Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_hf.optim.base import LossKind, SampledData, TensorSource  # noqa: E402
from asr_hf.optim.curvature import GGNOperator, loss_and_gradient  # noqa: E402
from asr_hf.optim.hf import HessianFree  # noqa: E402
from asr_hf.optim.precond import DiagonalPreconditioner, LBFGSPreconditioner  # noqa: E402
from asr_hf.optim.solvers import conjugate_gradient  # noqa: E402


def build(args: argparse.Namespace, device: torch.device):
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.examples, args.inputs, generator=g)
    w1 = torch.randn(args.inputs, 64, generator=g) / args.inputs**0.5
    w2 = torch.randn(64, args.outputs, generator=g) * 2.0
    t = (torch.tanh(x @ w1) @ w2).argmax(1)  # a teacher network's labels
    torch.manual_seed(args.seed)
    layers: list[nn.Module] = []
    width = args.inputs
    for _ in range(args.layers):
        layers += [nn.Linear(width, args.hidden), nn.Sigmoid()]
        width = args.hidden
    layers.append(nn.Linear(width, args.outputs))
    return nn.Sequential(*layers).to(device), x.to(device), t.to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="fewer pretraining steps, one damping value")
    ap.add_argument("--inputs", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--outputs", type=int, default=50)
    ap.add_argument("--examples", type=int, default=4096)
    ap.add_argument("--curv", type=int, default=1024, help="curvature sample size")
    ap.add_argument("--pretrain-steps", type=int, default=18)
    ap.add_argument("--dampings", default="1e-3", help="comma-separated lambda values")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--max-iters", type=int, default=3000)
    ap.add_argument("--history", type=int, default=20, help="L-BFGS memory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch default; 1 is steadier on a shared CPU)"
    )
    args = ap.parse_args()
    if args.quick:
        args.hidden, args.examples, args.curv, args.pretrain_steps = 64, 2048, 512, 10
    device = torch.device(args.device)
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    kind = LossKind.CROSS_ENTROPY
    model, x, t = build(args, device)
    src = TensorSource(x, t)

    t0 = time.perf_counter()
    hf = HessianFree(
        model, kind, preconditioner="lbfgs", lbfgs_history=args.history, lbfgs_keep_pairs=True,
        curv_fraction=args.curv / args.examples, seed=args.seed,
    )
    hf_stats = [hf.step(SampledData(src, src)) for _ in range(args.pretrain_steps)]
    pretrain_s = time.perf_counter() - t0
    assert hf.lbfgs is not None
    prev_state = hf.lbfgs.state_dict()

    perm = torch.randperm(args.examples, generator=torch.Generator().manual_seed(args.seed + 1)).to(device)
    idx_b, idx_a = perm[: args.curv], perm[args.curv : 2 * args.curv]
    gres = loss_and_gradient(model, kind, [(x, t)], square=True)
    b = -gres.grad
    half = perm[: args.examples // 2]
    b_a = -loss_and_gradient(model, kind, [(x[half], t[half])]).grad  # another gradient sample's RHS

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    result: dict = {
        "bench": "cg_preconditioning",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "net": f"{args.inputs}-{args.layers}x{args.hidden}-{args.outputs}",
        "examples": args.examples,
        "curv_sample": args.curv,
        "pretrain_hf_steps": args.pretrain_steps,
        "pretrain_seconds": round(pretrain_s, 1),
        "loss_after_pretrain": round(hf_stats[-1]["heldout_loss"], 4) if hf_stats else None,
        "hf_lambda_after_pretrain": float(f"{hf.damping:.3g}"),
        "prev_pairs": len(prev_state["memory"]["s"]),
        "rtol": args.rtol,
        "lbfgs_history": args.history,
    }
    for lam in [float(v) for v in args.dampings.split(",")]:
        op = GGNOperator(model, kind, [(x[idx_b], t[idx_b])], damping=lam)
        op.matvec(b)  # fill the forward cache outside the timings

        def solve(precond, flexible: bool, observe=None):
            sync()
            t1 = time.perf_counter()
            res = conjugate_gradient(
                op, b, precond=precond, flexible=flexible, observe=observe, rtol=args.rtol, progress_tol=None,
                max_iters=args.max_iters,
            )
            sync()
            return res, time.perf_counter() - t1

        def lbfgs(keep: bool, update_in_cg: bool) -> LBFGSPreconditioner:
            pre = LBFGSPreconditioner(op.numel, history=args.history, keep_pairs=keep, update_in_cg=update_in_cg)
            if keep:
                pre.load_state_dict(prev_state)
            pre.begin_solve(lam)  # shifts the kept pairs from lambda_prev to lambda
            return pre

        runs = {"none": solve(None, flexible=False)}
        runs["diagonal"] = solve(DiagonalPreconditioner.empirical_fisher(gres.sq_grad, lam), flexible=True)
        pre = lbfgs(keep=False, update_in_cg=True)
        runs["lbfgs_in_cg"] = solve(pre, flexible=True, observe=pre.observe)
        pre = lbfgs(keep=True, update_in_cg=True)
        runs["lbfgs"] = solve(pre, flexible=True, observe=pre.observe)
        pre = lbfgs(keep=True, update_in_cg=False)
        runs["lbfgs_fixed"] = solve(pre, flexible=False)
        # control: pairs that are not stale, from a solve at the *current* theta and lambda
        # on another curvature sample A (with another right-hand side), fixed during the solve
        op_a = GGNOperator(model, kind, [(x[idx_a], t[idx_a])], damping=lam)
        pre = LBFGSPreconditioner(op.numel, history=args.history, keep_pairs=True, update_in_cg=False)
        pre.begin_solve(lam)
        conjugate_gradient(
            op_a, b_a, precond=pre, flexible=True, observe=pre.observe, rtol=args.rtol, progress_tol=None,
            max_iters=args.max_iters,
        )
        pre.end_solve()
        pre.begin_solve(lam)
        runs["lbfgs_current_theta_pairs"] = solve(pre, flexible=False)

        iters = {k: res.iterations for k, (res, _) in runs.items()}
        secs = {k: round(sec, 3) for k, (_, sec) in runs.items()}
        result[f"lambda={lam:g}"] = {
            "iterations": iters,
            "converged": {k: res.stop_reason.value == "residual" for k, (res, _) in runs.items()},
            "seconds": secs,
            "iteration_ratio_none_over": {k: round(iters["none"] / max(v, 1), 3) for k, v in iters.items()},
            "time_ratio_none_over": {k: round(secs["none"] / max(v, 1e-9), 3) for k, v in secs.items()},
        }
    result["torch"] = torch.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
