"""Deep-autoencoder benchmark of the Kronecker-factored optimizers (Goldfarb et al. 2020, Sec. 5).

Training loss vs wall time for K-BFGS, K-BFGS(L), KFAC, Adam and RMSprop, measured side by
side in one process, on two problems scaled to a small CPU:

* ``digits``: scikit-learn's bundled 8x8 digits (1797 images, 64 pixels in [0, 1]) with the
  paper's 9-layer MNIST shape scaled down: 64-256-128-64-8-64-128-256-64
  (paper: 784-1000-500-250-30 mirrored);
* ``synthetic``: CURVES-like images rendered here (random cubic Bezier curves on a 16x16
  grid, 6000 images) with the paper's 13-layer CURVES shape scaled down:
  256-200-100-50-25-12-6 mirrored (paper: 784-400-200-100-50-25-6 mirrored).

As in the paper: ReLU hidden units, linear bottleneck, logistic outputs with binary cross
entropy summed over pixels and averaged over the minibatch, minibatches of 1000 (512 for
the 1797 digits), weight decay 1e-5 for every method, momentum 0.9 and moving averages 0.9.
Every method trains for the same wall-time budget (digits 10 s, synthetic 20 s) from the
same initial weights on the same minibatch sequence.  Hyper-parameters: ``--tune`` runs a
grid inside the paper's ranges (learning rate x damping for K-BFGS, K-BFGS(L) and KFAC;
learning rate for Adam/RMSprop with the authors' eps = 1e-4), each point for the full
budget, and keeps each method's lowest final training loss (the paper's protocol); the
default run uses ``DEFAULT_HP``, the winners of one such ``--tune`` run on this machine.
The full training-set loss is evaluated periodically with the clock stopped.

Output: a PNG plot (loss vs seconds, one panel per data set), progress on stderr, and one
JSON line on stdout: final losses, the target (the loss Adam reaches at the end of its
run), each method's time to reach it and ``ratio = Adam's time / method's time`` (> 1:
faster than Adam; null when the target was not reached within the budget).

Usage::

    python bench/bench_autoencoder.py [--quick] [--tune] [--device cpu|cuda] [--dataset digits|synthetic|all]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asr_hf.optim.base import LossKind  # noqa: E402
from asr_hf.optim.registry import build_optimizer  # noqa: E402

log = logging.getLogger("bench_autoencoder")

METHODS = ("kbfgs", "kbfgs_l", "kfac", "adam", "rmsprop")
LABELS = {"kbfgs": "K-BFGS", "kbfgs_l": "K-BFGS(L)", "kfac": "KFAC", "adam": "Adam", "rmsprop": "RMSprop"}
WEIGHT_DECAY = 1e-5

# Grids inside the paper's search ranges (learning rate and damping on a 1-3-10 scale; the
# authors' Adam/RMSprop eps = 1e-4).  ``--tune`` runs every point for the full budget and keeps
# the best final training loss per method (the paper's protocol); the default run uses
# DEFAULT_HP, the winners of such a run on this machine (bench/README.md).
GRIDS: dict[str, list[dict[str, Any]]] = {
    "kbfgs": [dict(lr=lr, damping=lam) for lr in (0.1, 0.3, 1.0) for lam in (0.1, 1.0)],
    "kbfgs_l": [dict(lr=lr, damping=lam) for lr in (0.1, 0.3, 1.0) for lam in (0.1, 1.0)],
    "kfac": [dict(lr=lr, damping=lam) for lr in (0.1, 0.3) for lam in (0.1, 0.3, 3.0)],
    "adam": [dict(lr=lr, eps=1e-4) for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)],
    "rmsprop": [dict(lr=lr, eps=1e-4) for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)],
}
DEFAULT_HP: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {
        "kbfgs": dict(lr=0.3, damping=0.1),
        "kbfgs_l": dict(lr=0.3, damping=0.1),
        "kfac": dict(lr=0.3, damping=0.1),
        "adam": dict(lr=3e-3, eps=1e-4),
        "rmsprop": dict(lr=1e-2, eps=1e-4),
    },
    "synthetic": {
        "kbfgs": dict(lr=0.3, damping=1.0),
        "kbfgs_l": dict(lr=0.3, damping=1.0),
        "kfac": dict(lr=0.3, damping=0.1),
        "adam": dict(lr=3e-3, eps=1e-4),
        "rmsprop": dict(lr=3e-3, eps=1e-4),
    },
}
BUDGET_S = {"digits": 10.0, "synthetic": 20.0}
FIXED: dict[str, dict[str, Any]] = {
    "kbfgs": dict(momentum=0.9, weight_decay=WEIGHT_DECAY),
    "kbfgs_l": dict(momentum=0.9, weight_decay=WEIGHT_DECAY, memory=100),
    "kfac": dict(momentum=0.9, weight_decay=WEIGHT_DECAY, inv_every=20, fisher="sampled"),
    "adam": dict(weight_decay=WEIGHT_DECAY),
    "rmsprop": dict(weight_decay=WEIGHT_DECAY, alpha=0.9),
}


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


@dataclass
class Problem:
    name: str
    data: torch.Tensor  # (N, D) in [0, 1]
    sizes: list[int]
    batch: int


def load_digits() -> torch.Tensor:
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        sys.stderr.write(
            "bench_autoencoder: the digits data set ships with scikit-learn, which is not installed.\n"
            "  pip install -r bench/requirements.txt   (or: pip install scikit-learn)\n"
            "  or run with --dataset synthetic\n"
        )
        raise SystemExit(2)
    return torch.from_numpy(sk_load_digits().data).float() / 16.0


def render_curves(n: int, side: int = 16, seed: int = 0) -> torch.Tensor:
    """CURVES-like images: one random cubic Bezier curve per image, soft-rendered.

    Each pixel is ``exp(-d^2 / (2 w^2))`` with ``d`` the distance from the pixel centre to
    the nearest of 64 points on the curve and ``w = 0.6`` pixels.  Returns ``(n, side^2)``.
    """
    g = torch.Generator().manual_seed(seed)
    ctrl = torch.rand(n, 4, 2, generator=g) * (side - 1)  # control points, pixel units
    u = torch.linspace(0, 1, 64)
    basis = torch.stack([(1 - u) ** 3, 3 * u * (1 - u) ** 2, 3 * u**2 * (1 - u), u**3], 1)  # (64, 4)
    pts = torch.einsum("tk,nkd->ntd", basis, ctrl)  # (n, 64, 2)
    yy, xx = torch.meshgrid(torch.arange(side).float(), torch.arange(side).float(), indexing="ij")
    pix = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)  # (side^2, 2)
    out = torch.empty(n, side * side)
    for start in range(0, n, 500):
        d2 = torch.cdist(pix.expand(min(500, n - start), -1, -1), pts[start : start + 500]).pow(2)
        out[start : start + 500] = torch.exp(-d2.min(dim=2).values / (2 * 0.6**2))
    return out


def make_problem(name: str) -> Problem:
    if name == "digits":
        return Problem("digits", load_digits(), [64, 256, 128, 64, 8, 64, 128, 256, 64], 512)
    if name == "synthetic":
        return Problem("synthetic", render_curves(6000), [256, 200, 100, 50, 25, 12, 6, 12, 25, 50, 100, 200, 256], 1000)
    raise ValueError(name)


def make_model(sizes: list[int], seed: int) -> nn.Sequential:
    """ReLU MLP autoencoder; linear at the bottleneck and at the output (logits).

    He-normal weights and zero biases: with torch's default Linear init most units of the
    narrow layers before the bottleneck start dead (83% of the 12-unit layer of the
    synthetic shape), which strands every method on the mean-image plateau.
    """
    torch.manual_seed(seed)
    bottleneck = sizes.index(min(sizes))
    mods: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        mods.append(lin)
        if i + 1 != bottleneck and i + 1 != len(sizes) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def bce_sum(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Binary cross entropy summed over pixels, averaged over rows."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


@dataclass
class Run:
    method: str
    hparams: dict[str, Any]
    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    diverged: bool = False

    @property
    def final(self) -> float:
        return self.losses[-1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    problem: Problem, method: str, hparams: dict[str, Any], budget_s: float, device: torch.device, eval_every_s: float
) -> Run:
    """Train for ``budget_s`` seconds of optimizer wall time (evaluation excluded)."""
    data = problem.data.to(device)
    model = make_model(problem.sizes, seed=0).to(device)
    opt = build_optimizer(method, model, LossKind.BCE, **FIXED[method], **hparams)
    gen = torch.Generator().manual_seed(1)
    run = Run(method, dict(hparams))

    def full_loss() -> float:
        with torch.no_grad():
            return sum(bce_sum(model(c), c).item() * c.shape[0] for c in data.split(2048)) / data.shape[0]

    run.times.append(0.0)
    run.losses.append(full_loss())
    elapsed, next_eval = 0.0, eval_every_s
    perm, pos = torch.randperm(data.shape[0], generator=gen), 0
    while elapsed < budget_s:
        if pos + problem.batch > data.shape[0]:
            perm, pos = torch.randperm(data.shape[0], generator=gen), 0
        xb = data[perm[pos : pos + problem.batch].to(device)]
        pos += problem.batch

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = bce_sum(model(xb), xb)
            loss.backward()
            return loss

        _sync(device)
        t0 = time.perf_counter()
        try:
            opt.step(closure)
        except RuntimeError as exc:  # e.g. a linear solve on a diverged (non-finite) factor
            log.warning("  %s %s stopped at step %d: %s", method, hparams, run.steps, str(exc).splitlines()[0])
            run.diverged = True
            break
        _sync(device)
        elapsed += time.perf_counter() - t0
        run.steps += 1
        if elapsed >= next_eval or elapsed >= budget_s:
            loss = full_loss()
            run.times.append(elapsed)
            run.losses.append(loss)
            next_eval = elapsed + eval_every_s
            if not math.isfinite(loss) or loss > 10 * run.losses[0]:
                run.diverged = True
                break
    return run


def time_to_target(run: Run, target: float) -> float | None:
    for t, loss in zip(run.times, run.losses):
        if loss <= target:
            return t
    return None


def bench_problem(problem: Problem, args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Any], dict[str, Run]]:
    budget = args.budget or (BUDGET_S[problem.name] / (3 if args.quick else 1))
    log.info(
        "%s: %d examples, layers %s, batch %d, %.0f s per run",
        problem.name, problem.data.shape[0], problem.sizes, problem.batch, budget,
    )
    runs: dict[str, Run] = {}
    tuning: dict[str, list[dict[str, Any]]] = {}
    for method in METHODS:
        grid = GRIDS[method] if args.tune else [DEFAULT_HP[problem.name][method]]
        trials = []
        for hp in grid:
            run = train(problem, method, hp, budget, device, eval_every_s=budget / 40)
            trials.append(run)
            log.info(
                "  %-8s %-30s final %.4f after %4d steps%s",
                method, hp, run.final, run.steps, " (diverged)" if run.diverged else "",
            )
        ok = [r for r in trials if not r.diverged] or trials
        runs[method] = min(ok, key=lambda r: r.final)
        if args.tune:
            tuning[method] = [
                {**r.hparams, "final_loss": None if r.diverged else round(r.final, 4)} for r in trials
            ]
    target = runs["adam"].final
    t_adam = time_to_target(runs["adam"], target)
    result: dict[str, Any] = {
        "n_train": int(problem.data.shape[0]),
        "layers": problem.sizes,
        "batch": problem.batch,
        "budget_s": budget,
        "target_loss": round(target, 4),
        "final_loss": {m: round(r.final, 4) for m, r in runs.items()},
        "steps": {m: r.steps for m, r in runs.items()},
        "time_to_target_s": {},
        "ratio_vs_adam": {},
        "hparams": {m: r.hparams for m, r in runs.items()},
        "diverged": [m for m, r in runs.items() if r.diverged],
    }
    for m, r in runs.items():
        t = time_to_target(r, target)
        result["time_to_target_s"][m] = None if t is None else round(t, 2)
        result["ratio_vs_adam"][m] = None if t is None or t_adam is None or t == 0 else round(t_adam / t, 2)
    if tuning:
        result["tuning"] = tuning
    return result, runs


def plot(all_runs: dict[str, dict[str, Run]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_runs), figsize=(6 * len(all_runs), 4.2), squeeze=False)
    for ax, (name, runs) in zip(axes[0], all_runs.items()):
        for m, r in runs.items():
            ax.plot(r.times, r.losses, label=f"{LABELS[m]} {r.hparams}", lw=1.6)
        ax.axhline(runs["adam"].final, color="gray", ls=":", lw=1, label="target (Adam's final)")
        # Zoom past the first tenth of the budget (the initial drop dwarfs the rest).
        budget = max(r.times[-1] for r in runs.values())
        late = [v for r in runs.values() for t, v in zip(r.times, r.losses) if t >= 0.1 * budget and math.isfinite(v)]
        low = min((v for r in runs.values() for v in r.losses if math.isfinite(v)), default=0.0)
        if late:
            ax.set_ylim(0.97 * low, 1.05 * max(late))
        ax.set_xlabel("optimizer wall time (s)")
        ax.set_ylabel("training loss (BCE, summed over pixels)")
        ax.set_title(f"{name} autoencoder")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a third of the default training time per run")
    p.add_argument("--tune", action="store_true", help="run the whole hyper-parameter grid (slow: ~28 runs per data set)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dataset", default="all", choices=["digits", "synthetic", "all"])
    p.add_argument("--budget", type=float, default=None, help="seconds of training per run (default: digits 10, synthetic 20)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier timings on a shared CPU)")
    p.add_argument("--plot", type=Path, default=Path("outputs/bench_autoencoder/autoencoder.png"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.stderr.write("bench_autoencoder: --device cuda but CUDA is not available\n")
        return 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    names = ["digits", "synthetic"] if args.dataset == "all" else [args.dataset]
    problems = [make_problem(n) for n in names]

    start = time.perf_counter()
    results, all_runs = {}, {}
    for prob in problems:
        results[prob.name], all_runs[prob.name] = bench_problem(prob, args, device)
    plot(all_runs, args.plot)
    log.info("plot written to %s (%.0f s in all)", args.plot, time.perf_counter() - start)
    summary = {
        "bench": "autoencoder",
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(device),
        "threads": args.threads if args.device == "cpu" else None,
        "quick": args.quick,
        "tuned_here": args.tune,
        "plot": str(args.plot),
        "datasets": results,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
