"""The Hessian-free optimizer family (one class, variants by options).

One :meth:`HessianFree.step` is one HF iteration ``k`` (Martens 2010; Kingsbury,
Sainath & Soltau 2012; Sainath et al. 2013; Zhang et al. 2017):

1. draw the gradient sample ``S_g`` and the curvature sample ``S_c`` from
   ``data.train`` with the sampling schedule (fixed fraction or geometric);
2. ``g = grad L_{S_g}(theta) + l2 theta`` (and, for the diagonal preconditioner, the
   empirical-Fisher diagonal ``F = mean_n (grad l_n)^2`` from the same pass);
3. the curvature operator ``A = C_{S_c} + (l2 + lambda) I`` (GGN or Hessian; its
   block-diagonal part for block HF);
4. CG on ``A p = -g`` from ``x_0 = decay * p_{k-1}`` with the chosen preconditioner
   (none, Martens' diagonal, L-BFGS from the previous iteration's CG pairs held
   fixed during the solve, or the Kronecker-factored GGN of the curvature sample),
   Martens' stopping rule, iterates kept on the grid
   ``ceil(5 * 1.3^j)``;
5. backtracking over the kept iterates on the held-out objective
   ``f(theta) = L_heldout(theta) + 0.5 l2 |theta|^2``: start from the last iterate
   and move to earlier ones while ``f`` decreases;
6. the reduction ratio ``rho = (f(theta + p) - f(theta)) / q(p)`` with the damped
   quadratic model ``q(p) = g.p + 0.5 p^T A p`` (CG's ``phi``); Levenberg-Marquardt:
   ``lambda *= boost`` if ``rho < 1/4``, ``lambda *= drop`` if ``rho > 3/4``;
7. Armijo line search ``f(theta + a p) <= f(theta) + c a g.p`` with ``a = 1, 0.8,
   0.8^2, ...``; a step that does not reduce ``f`` is rejected (``theta`` unchanged)
   and ``lambda`` is raised.

The options are :class:`~asr_hf.optim.hf_config.HFConfig`'s.

Trainer contract (:class:`~asr_hf.optim.base.OptimizerKind.SAMPLED`)::

    opt = build_optimizer("hf_lbfgs_sampled", model, LossKind.CROSS_ENTROPY, seed=1)
    for epoch in ...:
        stats = opt.step(SampledData(train=train_source, heldout=heldout_source))
        log(stats)                      # also opt.last_stats()
        save(model.state_dict(), opt.state_dict())
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import time
from dataclasses import asdict
from typing import Any, Iterator, Optional

import torch
from torch import nn

from asr_hf.optim.base import LocalReducer, LossKind, OptimizerKind, Reducer, SampledData
from asr_hf.optim.curvature import (
    CurvatureOperator,
    GGNOperator,
    HessianOperator,
    SourceChunks,
    evaluate_loss,
    loss_and_gradient,
    resolve_backend,
)
from asr_hf.optim.device import auto_chunk_size, tf32_matmuls
from asr_hf.optim.hf_config import CurvatureKind, HFConfig
from asr_hf.optim.kfac_precond import KFACPreconditioner
from asr_hf.optim.layout import BlockLayout, ParamLayout, parameter_blocks
from asr_hf.optim.precond import DiagonalPreconditioner, LBFGSPreconditioner, Preconditioner, PreconditionerKind
from asr_hf.optim.registry import register_optimizer
from asr_hf.optim.sampling import DataSampler, FixedFractionSchedule, GeometricSchedule, SamplingKind
from asr_hf.optim.solvers import CGResult, StopReason, conjugate_gradient, martens_grid

logger = logging.getLogger(__name__)

Tensor = torch.Tensor


#: ``nonfinite`` statistic of a step: what was not finite (0: nothing, the step went ahead)
NONFINITE_CODES = {"loss": 1.0, "gradient": 2.0, "CG solution": 3.0}

_STOP_CODES = {
    StopReason.PROGRESS: 0,
    StopReason.RESIDUAL: 1,
    StopReason.MAX_ITERS: 2,
    StopReason.NEGATIVE_CURVATURE: 3,
    StopReason.MIXED: 4,
}


#: cumulative work counters (``examples_precond``: forward+backward passes of the KFAC
#: preconditioner's factor measurement)
_COUNTERS = {"examples_grad": 0.0, "examples_curv": 0.0, "examples_heldout": 0.0, "examples_precond": 0.0,
             "cg_iters_total": 0.0}  # fmt: skip


@contextlib.contextmanager
def _matmul_precision(enabled: bool, device: torch.device) -> Iterator[None]:
    """TF32 matmuls on CUDA inside the step when ``enabled`` (restored afterwards; else the
    global setting holds).  The step's scalars stay out of TF32: held-out losses run in
    IEEE float32 (:func:`evaluate_loss`), CG's inner products are ``torch.dot`` (level-1
    BLAS, never TF32) and ``g.p`` is float64."""
    with tf32_matmuls(True, device) if enabled else contextlib.nullcontext():
        yield


class HessianFree:
    """Hessian-free optimization: GGN (or Hessian) products + truncated CG per iteration.

    Args:
        model: the network; all its trainable parameters are optimized.
        loss_kind: output non-linearity + loss (fixes the GGN's output Hessian).
        reducer: sums gradients, products and losses over workers (identity by default).
        **options: :class:`HFConfig` fields.

    Attributes:
        damping: the current Levenberg-Marquardt ``lambda``.
    """

    kind = OptimizerKind.SAMPLED

    def __init__(
        self, model: nn.Module, loss_kind: LossKind, *, reducer: Optional[Reducer] = None, **options: Any
    ) -> None:
        self.config = HFConfig(**options)
        cfg = self.config
        self.model = model
        self.loss_kind = LossKind(loss_kind)
        self.reducer = reducer or LocalReducer()
        self.layout = ParamLayout.from_module(model)
        self.chunk_size = cfg.chunk_size if cfg.chunk_size is not None else auto_chunk_size(model, self.layout.device)
        if cfg.curvature == CurvatureKind.GGN:
            resolve_backend(model, self.layout, cfg.backend)  # fail now, not at the first step
        self.blocks: Optional[BlockLayout] = (
            parameter_blocks(self.layout, cfg.blocks) if cfg.block_diagonal else None
        )
        if cfg.sampling == SamplingKind.FIXED:
            gs = FixedFractionSchedule(cfg.grad_fraction, cfg.grad_min_size, cfg.grad_max_size)
            cs = FixedFractionSchedule(cfg.curv_fraction, cfg.curv_min_size, cfg.curv_max_size)
        else:
            gs = GeometricSchedule(
                cfg.grad_initial, cfg.grad_growth, cfg.grad_max_fraction, cfg.grad_min_size, cfg.grad_max_size
            )
            cs = GeometricSchedule(
                cfg.curv_initial, cfg.curv_growth, cfg.curv_max_fraction, cfg.curv_min_size, cfg.curv_max_size
            )
        self.sampler = DataSampler(gs, cs, seed=cfg.seed, nested=cfg.nested_samples, heldout_size=cfg.heldout_size)
        self.damping = float(cfg.initial_damping)
        self.prev_solution = torch.zeros(self.layout.numel, dtype=self.layout.dtype, device=self.layout.device)
        self.lbfgs: Optional[LBFGSPreconditioner] = None
        if cfg.preconditioner == PreconditionerKind.LBFGS:
            self.lbfgs = LBFGSPreconditioner(
                self.layout.numel,
                history=cfg.lbfgs_history,
                source=cfg.lbfgs_pairs,
                selection=cfg.lbfgs_selection,
                pairs_per_solve=cfg.lbfgs_pairs_per_solve,
                refresh=cfg.lbfgs_refresh,
            )
        self.kfac: Optional[KFACPreconditioner] = None
        if cfg.preconditioner == PreconditionerKind.KFAC:
            # its own sampler stream: the gradient/curvature samples stay those of the other variants
            self.kfac = KFACPreconditioner(model, self.layout, self.loss_kind, seed=cfg.seed + 7919)
        self.grid = martens_grid(cfg.cg_max_iters, cfg.cg_grid_start, cfg.cg_grid_ratio)
        self.num_steps = 0
        self.counters = dict(_COUNTERS)
        self._stats: dict[str, float] = {}
        self._heldout_cache: Optional[tuple[Tensor, float]] = None  # (theta, f(theta))

    # ------------------------------------------------------------------ public
    def last_stats(self) -> dict[str, float]:
        """Statistics of the latest :meth:`step`."""
        return dict(self._stats)

    def step(self, data: SampledData) -> dict[str, float]:
        """One HF iteration on ``data`` (see the module docstring); returns statistics:

        ``loss`` (gradient-sample objective at the old parameters), ``heldout_loss_before``,
        ``heldout_loss`` (after the step), ``lambda`` (used), ``next_lambda``, ``rho``,
        ``cg_iters``, ``cg_stop`` (0 progress, 1 residual, 2 cap, 3 negative curvature,
        4 mixed), ``chosen_iter``, ``step_rate``, ``accepted``, ``nonfinite`` (0, or
        :data:`NONFINITE_CODES`: a non-finite loss, gradient or CG solution rejected the
        step, parameters unchanged, ``lambda`` raised), ``grad_samples``,
        ``curv_samples``, ``heldout_samples``, ``grad_norm``, ``step_norm``,
        ``heldout_evals``, ``lbfgs_pairs``, the ``time_*`` and ``wall_time`` seconds and
        cumulative ``examples_*`` counts.
        """
        with _matmul_precision(self.config.tf32, self.layout.device):
            return self._step(data)

    # ------------------------------------------------------------------ internals
    def _heldout_objective(self, data: SampledData, idx: Tensor, theta_now: Tensor) -> float:
        cfg = self.config
        s, n = evaluate_loss(
            self.model, self.loss_kind, SourceChunks(data.heldout, idx, self.chunk_size), reducer=self.reducer
        )
        self._heldout_count += n
        self._heldout_evals += 1
        f = s / n
        if cfg.l2:
            f += 0.5 * cfg.l2 * float(theta_now.double().pow(2).sum())
        return f

    def _eval_at(self, data: SampledData, idx: Tensor, theta: Tensor, p: Tensor, rate: float = 1.0) -> float:
        trial = theta + rate * p if rate != 1.0 else theta + p
        self.layout.set_flat_(trial)
        f = self._heldout_objective(data, idx, trial)
        return f if math.isfinite(f) else math.inf

    def _operator(self, data: SampledData, idx: Tensor) -> CurvatureOperator:
        cfg = self.config
        chunks = SourceChunks(data.train, idx, self.chunk_size)
        common: dict[str, Any] = dict(
            damping=self.damping,
            l2=cfg.l2,
            reducer=self.reducer,
            cache=cfg.cache_forward,
            blocks=self.blocks,
            layout=self.layout,
        )
        if cfg.curvature == CurvatureKind.HESSIAN:
            return HessianOperator(self.model, self.loss_kind, chunks, **common)
        return GGNOperator(self.model, self.loss_kind, chunks, backend=cfg.backend, **common)

    def _step(self, data: SampledData) -> dict[str, float]:
        cfg = self.config
        t_start = time.perf_counter()
        self._heldout_count = 0.0
        self._heldout_evals = 0
        lam = self.damping
        k = self.sampler.iteration

        sample = self.sampler.draw(len(data.train))
        ho_idx = self.sampler.heldout(len(data.heldout))
        theta = self.layout.get_flat()

        # -- gradient (and empirical Fisher diagonal) on the gradient sample
        t0 = time.perf_counter()
        want_sq = cfg.preconditioner == PreconditionerKind.DIAGONAL
        gres = loss_and_gradient(
            self.model,
            self.loss_kind,
            SourceChunks(data.train, sample.grad, self.chunk_size),
            layout=self.layout,
            reducer=self.reducer,
            square=want_sq,
            backend=cfg.backend,
        )
        grad = gres.grad
        train_obj = gres.loss
        if cfg.l2:
            grad = grad + cfg.l2 * theta
            train_obj += 0.5 * cfg.l2 * float(theta.double().pow(2).sum())
        t_grad = time.perf_counter() - t0
        if not (math.isfinite(train_obj) and bool(torch.isfinite(grad).all())):
            return self._reject_nonfinite(k, lam, "loss" if not math.isfinite(train_obj) else "gradient",
                                          train_obj, sample, ho_idx, t_start)  # fmt: skip

        # -- held-out objective at theta (reused from the previous step when valid)
        t0 = time.perf_counter()
        cache = self._heldout_cache
        if (
            cache is not None
            and self.sampler.heldout_size is None
            and cache[0].shape == theta.shape
            and torch.equal(cache[0], theta)
        ):
            f0 = cache[1]
        else:
            f0 = self._heldout_objective(data, ho_idx, theta)
        t_ho = time.perf_counter() - t0

        # -- CG on (C + (l2 + lambda) I) p = -g
        t0 = time.perf_counter()
        op = self._operator(data, sample.curv)
        precond: Optional[Preconditioner] = None
        t_precond = 0.0  # building the preconditioner (KFAC factors), part of time_cg
        if cfg.preconditioner == PreconditionerKind.DIAGONAL:
            assert gres.sq_grad is not None
            precond = DiagonalPreconditioner.empirical_fisher(gres.sq_grad, lam, cfg.precond_exponent, cfg.l2)
        elif self.lbfgs is not None:
            precond = self.lbfgs
            self.lbfgs.begin_solve(lam, operator=op)
        elif self.kfac is not None:
            n0, t1 = self.kfac.examples, time.perf_counter()
            self.kfac.update(SourceChunks(data.train, sample.curv, self.chunk_size), lam + cfg.l2, self.reducer)
            self.counters["examples_precond"] += float(self.kfac.examples - n0)
            t_precond = time.perf_counter() - t1
            precond = self.kfac
        x0 = self.prev_solution * cfg.warm_start_decay
        res = conjugate_gradient(
            op,
            -grad,
            x0,
            precond=precond,
            flexible=cfg.flexible_cg,
            max_iters=cfg.cg_max_iters,
            rtol=cfg.cg_rtol,
            progress_tol=cfg.cg_progress_tol,
            progress_window=cfg.cg_progress_window,
            grid=self.grid,
            observe=precond.observe if self.lbfgs is not None and precond is not None else None,
            segments=self.blocks.segments if self.blocks is not None else None,
            num_segments=self.blocks.num_blocks if self.blocks is not None else 1,
        )
        if precond is not None:
            precond.end_solve()
        t_cg = time.perf_counter() - t0
        if not bool(torch.isfinite(res.x).all()):  # e.g. a NaN curvature product or preconditioner
            self.counters["cg_iters_total"] += res.iterations
            self.counters["examples_curv"] += float(op.examples_processed)
            return self._reject_nonfinite(k, lam, "CG solution", train_obj, sample, ho_idx, t_start)

        # -- backtracking, reduction ratio, damping, line search
        t0 = time.perf_counter()
        chosen, f_chosen = self._backtrack(data, ho_idx, theta, res)
        p = chosen.x
        pred = chosen.phi  # q(p) - q(0), the damped quadratic model
        rho = (f_chosen - f0) / pred if pred < 0 and math.isfinite(f_chosen) else -math.inf
        p_zero = not bool(torch.any(p != 0))
        if p_zero and not res.negative_curvature:
            new_lam = lam  # nothing to do: g = 0 (or CG made no progress from a zero start)
        elif not rho >= cfg.rho_low:
            new_lam = lam * cfg.damping_boost
        elif rho > cfg.rho_high:
            new_lam = lam * cfg.damping_drop
        else:
            new_lam = lam

        gp = float(torch.dot(grad.double(), p.double()))
        rate, f_new = 1.0, f_chosen
        accepted = False
        if not p_zero:
            tries = 0
            while True:
                if f_new < f0 and (not cfg.line_search or f_new <= f0 + cfg.ls_c * rate * gp):
                    accepted = True
                    break
                if not cfg.line_search or tries >= cfg.ls_max_tries:
                    break
                rate *= cfg.ls_rate
                tries += 1
                f_new = self._eval_at(data, ho_idx, theta, p, rate)
        if accepted:
            new_theta = theta + rate * p if rate != 1.0 else theta + p
            self.layout.set_flat_(new_theta)
            self._heldout_cache = (new_theta, f_new)
        else:
            rate, f_new = 0.0, f0
            self.layout.set_flat_(theta)
            self._heldout_cache = (theta, f0)
            if not p_zero:
                new_lam = lam * cfg.damping_boost
        self.damping = max(new_lam, cfg.min_damping)
        t_ho += time.perf_counter() - t0

        self.prev_solution = res.x
        self.sampler.advance()
        self.num_steps += 1
        n_curv = float(sample.curv.numel())
        self.counters["examples_grad"] += float(sample.grad.numel())
        self.counters["examples_curv"] += float(op.examples_processed) + (n_curv if cfg.cache_forward else 0.0)
        self.counters["examples_heldout"] += self._heldout_count
        self.counters["cg_iters_total"] += res.iterations
        stats = {
            "iteration": float(k),
            "loss": train_obj,
            "heldout_loss_before": f0,
            "heldout_loss": f_new,
            "lambda": lam,
            "next_lambda": self.damping,
            "rho": rho,
            "cg_iters": float(res.iterations),
            "cg_stop": float(_STOP_CODES[res.stop_reason]),
            "chosen_iter": float(chosen.iteration),
            "step_rate": rate,
            "accepted": float(accepted),
            "nonfinite": 0.0,
            "grad_samples": float(sample.grad.numel()),
            "curv_samples": n_curv,
            "heldout_samples": float(ho_idx.numel()),
            "heldout_evals": float(self._heldout_evals),
            "grad_norm": float(grad.norm()),
            "step_norm": rate * float(p.norm()),
            "model_reduction": pred,
            "lbfgs_pairs": float(len(self.lbfgs.memory)) if self.lbfgs is not None else 0.0,
            "lbfgs_refresh_products": float(self.lbfgs.refresh_products) if self.lbfgs is not None else 0.0,
            "time_gradient": t_grad,
            "time_cg": t_cg,
            "time_precond": t_precond,
            "time_heldout": t_ho,
            "wall_time": time.perf_counter() - t_start,
            **self.counters,
        }
        self._stats = stats
        logger.info(
            "HF %d: loss %.5f heldout %.5f -> %.5f lambda %.3g rho %.3f cg %d (chose %d) rate %.3g%s",
            k,
            train_obj,
            f0,
            f_new,
            lam,
            rho,
            res.iterations,
            chosen.iteration,
            rate,
            "" if accepted else " [rejected]",
        )
        return dict(stats)

    def _reject_nonfinite(
        self, k: int, lam: float, what: str, train_obj: float, sample, ho_idx: Tensor, t_start: float
    ) -> dict[str, float]:
        """End the iteration without a step: the gradient sample's loss or gradient, or the
        CG solution, is not finite.  The parameters are unchanged, ``lambda`` is raised and
        the next solve starts from zero (not from a non-finite warm start)."""
        self.damping = max(lam * self.config.damping_boost, self.config.min_damping)
        self.prev_solution = torch.zeros_like(self.prev_solution)
        self.sampler.advance()
        self.num_steps += 1
        self.counters["examples_grad"] += float(sample.grad.numel())
        stats = {
            "iteration": float(k), "loss": train_obj, "lambda": lam, "next_lambda": self.damping,
            "accepted": 0.0, "nonfinite": NONFINITE_CODES[what], "step_rate": 0.0, "step_norm": 0.0,
            "grad_samples": float(sample.grad.numel()), "curv_samples": float(sample.curv.numel()),
            "heldout_samples": float(ho_idx.numel()), "wall_time": time.perf_counter() - t_start, **self.counters,
        }  # fmt: skip
        self._stats = stats
        logger.warning("HF %d: non-finite %s; step rejected, lambda %.3g -> %.3g", k, what, lam, self.damping)
        return dict(stats)

    def _backtrack(self, data: SampledData, idx: Tensor, theta: Tensor, res: CGResult):
        """Martens' backtracking: from the last kept iterate move to earlier ones while
        the held-out objective decreases.  Returns ``(iterate, f(theta + x))``."""
        iterates = res.iterates if self.config.backtrack else res.iterates[-1:]
        chosen = iterates[-1]
        if not bool(torch.any(chosen.x != 0)):
            return chosen, math.inf
        f_best = self._eval_at(data, idx, theta, chosen.x)
        for it in reversed(iterates[:-1]):
            f = self._eval_at(data, idx, theta, it.x)
            if not f < f_best:
                break
            chosen, f_best = it, f
        return chosen, f_best

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed for an exact resume (with the model's own state dict)."""
        return {
            "damping": self.damping,
            "prev_solution": self.prev_solution.clone(),
            "sampler": self.sampler.state_dict(),
            "lbfgs": self.lbfgs.state_dict() if self.lbfgs is not None else {},
            "kfac": self.kfac.state_dict() if self.kfac is not None else {},
            "num_steps": self.num_steps,
            "counters": dict(self.counters),
            # the held-out objective at the current parameters, reused by the next step
            "heldout_cache": (
                {"theta": self._heldout_cache[0].clone(), "value": self._heldout_cache[1]}
                if self._heldout_cache is not None
                else {}
            ),
            "config": {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(self.config).items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev, dt = self.layout.device, self.layout.dtype
        saved_cfg = state.get("config", {})
        mine = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(self.config).items()}
        diff = sorted(k for k in saved_cfg if saved_cfg[k] != mine.get(k))
        if diff:
            logger.warning("loading HF state saved with different options: %s", diff)
        self.damping = float(state["damping"])
        prev = state["prev_solution"]
        if prev.numel() != self.layout.numel:
            raise ValueError(f"saved CG solution has {prev.numel()} elements, model has {self.layout.numel}")
        self.prev_solution = prev.to(device=dev, dtype=dt).clone()
        self.sampler.load_state_dict(state["sampler"])
        if self.lbfgs is not None and state.get("lbfgs"):
            lb = dict(state["lbfgs"])
            mem = dict(lb["memory"])
            mem["s"] = [t.to(device=dev, dtype=dt) for t in mem["s"]]
            mem["y"] = [t.to(device=dev, dtype=dt) for t in mem["y"]]
            lb["memory"] = mem
            self.lbfgs.load_state_dict(lb)
        if self.kfac is not None and state.get("kfac"):
            self.kfac.load_state_dict(state["kfac"])
        self.num_steps = int(state["num_steps"])
        self.counters = {**_COUNTERS, **{k: float(v) for k, v in state["counters"].items()}}
        cache = state.get("heldout_cache") or {}
        self._heldout_cache = (cache["theta"].to(device=dev, dtype=dt), float(cache["value"])) if cache else None


# ----------------------------------------------------------------------------- registry

_VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "hf": ({}, "Hessian-free (Martens 2010 / Kingsbury 2012): GGN-CG, fixed-fraction samples"),
    "hf_diag": (
        {"preconditioner": "diagonal"},
        "Hessian-free with Martens' empirical-Fisher^0.75 diagonal preconditioner",
    ),
    "hf_lbfgs": (
        {"preconditioner": "lbfgs"},
        "Hessian-free with the L-BFGS preconditioner and flexible PCG (Sainath et al. 2013)",
    ),
    "hf_sampled": (
        {"sampling": "geometric"},
        "Hessian-free with geometrically growing gradient/curvature samples (Sainath et al. 2013)",
    ),
    "hf_lbfgs_sampled": (
        {"preconditioner": "lbfgs", "sampling": "geometric"},
        "Hessian-free with L-BFGS-preconditioned flexible PCG and geometric sampling (Sainath et al. 2013)",
    ),
    "hf_kfac": (
        {"preconditioner": "kfac"},
        "Hessian-free with CG preconditioned by the Kronecker-factored GGN of each curvature sample",
    ),
    "hf_kfac_sampled": (
        {"preconditioner": "kfac", "sampling": "geometric"},
        "Hessian-free with Kronecker-factored PCG and geometric sampling",
    ),
    "hf_block": (
        {"block_diagonal": True},
        "block-diagonal Hessian-free: per-layer GGN blocks, batched per-block CG (Zhang et al. 2017)",
    ),
}


def build_hf(model: nn.Module, loss_kind: LossKind, *, reducer: Optional[Reducer] = None, **options: Any) -> HessianFree:
    """A :class:`HessianFree` (the registered name's preset is among ``options``)."""
    return HessianFree(model, loss_kind, reducer=reducer, **options)


for _name, (_defaults, _doc) in _VARIANTS.items():
    register_optimizer(
        _name, OptimizerKind.SAMPLED, help=_doc, data_parallel="reducer", options_from=(HFConfig,), preset=_defaults,
        bare_net=True,
    )(build_hf)  # fmt: skip

HF_VARIANTS: dict[str, dict[str, Any]] = {name: dict(d) for name, (d, _) in _VARIANTS.items()}
"""Registered HF names -> the options they preset."""
