"""CG iterations on the sequence of systems a real HF run solves: plain CG vs the
L-BFGS preconditioners vs Martens' diagonal.

Set-up: a sigmoid DNN with softmax cross-entropy on teacher-generated labels is trained
by plain HF (``hf``).  At each of its iterations ``k`` the system HF solves,
``(G_{B_k} + lambda_k I) p = -g_k`` (``G_{B_k}`` the GGN on that iteration's fresh
curvature sample, ``g_k`` the full-data gradient, ``lambda_k`` HF's damping), is solved
to ``|r| <= rtol |b|`` (Martens' progress rule off) by every method below, each method
carrying its own preconditioner state from system to system exactly as HF would:

* ``none``: plain CG;
* ``diagonal``: ``(F + lambda)^0.75``, ``F`` the empirical-Fisher diagonal (Martens 2010);
* ``lbfgs``: the default (``hf_lbfgs``): pairs of earlier solves, the first 10 of each
  run, 40 kept, damping-shifted, fixed during the solve (Morales & Nocedal 2000);
* ``lbfgs_last_run``: only the previous run's pairs (first 40 of it), fixed;
* ``lbfgs_even``: the previous run's 20 evenly spaced pairs, fixed;
* ``lbfgs_refresh``: the default with ``y = A_k s`` recomputed for every kept pair
  (its extra products are counted in ``products``);
* ``lbfgs_in_solve``: pairs from the running solve only (flexible PCG; CG in exact
  arithmetic);
* ``kfac``: the damped Kronecker-factored GGN of the system's own curvature sample
  (``hf_kfac``; :mod:`asr_hf.optim.kfac_precond`), rebuilt per system.

All methods see the same systems (the trajectory is plain HF's), so the comparison is
of the preconditioners alone.  Two measures of a solve, per method and system:

* iterations to the relative residual ``|r| <= rtol |b|``: their sum over systems 2..
  (the first has no pairs yet), products (iterations plus refresh products), seconds, and
  ``ratio_none_over`` (> 1: fewer products than plain CG);
* iterations until the damped quadratic model ``phi(x) = 0.5 x^T A x - b^T x`` reaches
  99% and 99.9% of its optimal reduction ``phi*`` (the end of a solve to ``rtol``):
  what HF's CG is run for (Martens' progress rule stops on ``phi``).  PCG minimises
  ``phi`` (the ``A``-norm error), not ``|r|``, so the residual count can rank a
  preconditioner below CG while it reaches the model reduction sooner
  (``phi_ratio_none_over``).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_hf.optim.base import LossKind, SampledData, TensorSource  # noqa: E402
from asr_hf.optim.curvature import GGNOperator, loss_and_gradient  # noqa: E402
from asr_hf.optim.hf import HessianFree  # noqa: E402
from asr_hf.optim.kfac_precond import KFACPreconditioner  # noqa: E402
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


METHODS = ("none", "diagonal", "lbfgs", "lbfgs_last_run", "lbfgs_even", "lbfgs_refresh", "lbfgs_in_solve", "kfac")
PHI_FRACTIONS = (0.99, 0.999)


def make_preconditioners(n: int) -> dict[str, LBFGSPreconditioner | None]:
    return {
        "none": None,
        "diagonal": None,  # rebuilt per system from the gradient's squares
        "lbfgs": LBFGSPreconditioner(n),
        "lbfgs_last_run": LBFGSPreconditioner(n, history=40, pairs_per_solve=40),
        "lbfgs_even": LBFGSPreconditioner(n, history=20, pairs_per_solve=20, selection="even"),
        "lbfgs_refresh": LBFGSPreconditioner(n, refresh=True),
        "lbfgs_in_solve": LBFGSPreconditioner(n, history=20, source="in_solve"),
        "kfac": None,  # KFACPreconditioner, updated per system
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smaller net, fewer systems (~10 s)")
    ap.add_argument("--inputs", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--outputs", type=int, default=50)
    ap.add_argument("--examples", type=int, default=4096)
    ap.add_argument("--curv", type=int, default=1024, help="curvature sample size")
    ap.add_argument("--systems", type=int, default=12, help="HF iterations (systems) measured")
    ap.add_argument("--initial-damping", type=float, default=0.01)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--max-iters", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.quick:
        args.hidden, args.examples, args.curv, args.systems = 64, 2048, 512, 8
    device = torch.device(args.device)
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    kind = LossKind.CROSS_ENTROPY
    model, x, t = build(args, device)
    src = TensorSource(x, t)
    hf = HessianFree(model, kind, curv_fraction=args.curv / args.examples, initial_damping=args.initial_damping,
                     cg_max_iters=250, seed=args.seed)  # fmt: skip
    precs = make_preconditioners(hf.layout.numel)
    kfac = KFACPreconditioner(model, hf.layout, kind, seed=args.seed + 3)
    phi_iters: dict[str, dict[str, list[int]]] = {f"{q:g}": {m: [] for m in METHODS} for q in PHI_FRACTIONS}
    iters: dict[str, list[int]] = {m: [] for m in METHODS}
    products: dict[str, list[int]] = {m: [] for m in METHODS}
    secs: dict[str, float] = {m: 0.0 for m in METHODS}
    converged: dict[str, bool] = {m: True for m in METHODS}
    dampings, losses = [], []
    gen = torch.Generator().manual_seed(args.seed + 1)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.systems):
        lam = hf.damping
        idx = torch.randperm(args.examples, generator=gen)[: args.curv].to(device)
        gres = loss_and_gradient(model, kind, [(x, t)], square=True)
        b = -gres.grad
        op = GGNOperator(model, kind, [(x[idx], t[idx])], damping=lam)
        op.matvec(b)  # fill the forward cache outside the timings
        for m in METHODS:
            pre = precs[m]
            sync()
            t_build = time.perf_counter()
            if m == "diagonal":
                pre = DiagonalPreconditioner.empirical_fisher(gres.sq_grad, lam)
            elif m == "kfac":
                kfac.update([(x[idx], t[idx])], lam)
                pre = kfac
            sync()
            t_build = time.perf_counter() - t_build
            refresh0 = pre.refresh_products if isinstance(pre, LBFGSPreconditioner) else 0
            sync()
            t1 = time.perf_counter()
            if isinstance(pre, LBFGSPreconditioner):
                pre.begin_solve(lam, operator=op)
            track = {"x": torch.zeros_like(b), "ax": torch.zeros_like(b), "phi": []}

            def observe(s: torch.Tensor, a_s: torch.Tensor, pre=pre) -> None:
                if isinstance(pre, LBFGSPreconditioner):
                    pre.observe(s, a_s)
                track["x"] += s  # x_i from x_0 = 0, and A x_i, for phi (outside the solver's own work)
                track["ax"] += a_s
                track["phi"].append(float(0.5 * track["x"] @ track["ax"] - b @ track["x"]))

            res = conjugate_gradient(
                op, b, precond=pre, flexible=not getattr(pre, "fixed", True), observe=observe,
                rtol=args.rtol, progress_tol=None, max_iters=args.max_iters,
            )  # fmt: skip
            if isinstance(pre, LBFGSPreconditioner):
                pre.end_solve()
            sync()
            secs[m] += time.perf_counter() - t1 + t_build
            phis = track["phi"] or [0.0]
            for q in PHI_FRACTIONS:
                phi_iters[f"{q:g}"][m].append(next(i + 1 for i, v in enumerate(phis) if v <= q * phis[-1]))
            extra = (pre.refresh_products - refresh0) if isinstance(pre, LBFGSPreconditioner) else 0
            iters[m].append(res.iterations)
            products[m].append(res.iterations + extra)
            converged[m] &= res.stop_reason.value == "residual"
        dampings.append(lam)
        stats = hf.step(SampledData(src, src))  # advance plain HF's trajectory
        losses.append(stats["heldout_loss"])

    later = {m: sum(v[1:]) for m, v in products.items()}
    per_system = {m: [round(a / max(b, 1), 3) for a, b in zip(iters["none"][1:], v[1:])] for m, v in products.items()}
    result = {
        "bench": "cg_preconditioning_sequence",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "net": f"{args.inputs}-{args.layers}x{args.hidden}-{args.outputs}",
        "params": hf.layout.numel,
        "examples": args.examples,
        "curv_sample": args.curv,
        "systems": args.systems,
        "rtol": args.rtol,
        "dampings": [float(f"{v:.3g}") for v in dampings],
        "heldout_loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
        "iterations": iters,
        "products_systems_2_on": later,
        "converged": converged,
        "seconds": {m: round(v, 2) for m, v in secs.items()},
        "ratio_none_over": {m: round(later["none"] / max(v, 1), 3) for m, v in later.items()},
        "median_per_system_ratio_none_over": {m: statistics.median(v) for m, v in per_system.items()},
        "time_ratio_none_over": {m: round(secs["none"] / max(v, 1e-9), 3) for m, v in secs.items()},
        "phi_iterations": phi_iters,
        "phi_ratio_none_over": {
            q: {m: round(sum(by["none"][1:]) / max(sum(v[1:]), 1), 3) for m, v in by.items()}
            for q, by in phi_iters.items()
        },
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
