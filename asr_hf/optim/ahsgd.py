"""Multi-worker SGD with an approximated-Hessian (multi-secant) sync step (arXiv 1709.05069).

No public code exists for the paper; this module is a reconstruction.  The method runs on
``m`` data-parallel workers (``m`` = the reducer's world size):

1. every round starts from common parameters ``theta_bar`` (identical on all workers);
2. each worker takes ``sync_period - 1`` local SGD steps (optional momentum and weight decay)
   on its own minibatches, reaching ``theta_i``;
3. on the round's last call (the *sync call*) each worker evaluates its closure gradient
   ``g_i`` at ``theta_i`` on that call's minibatch (weight decay included:
   ``g_i = grad_i + wd * theta_i``, the gradient of the regularised objective), and all
   workers jump to

   ``theta_new = theta_mean - eta * H g_mean``

   with ``theta_mean = mean_i theta_i``, ``g_mean = mean_i g_i`` and ``H ~ Hessian^{-1}`` the
   multi-secant least-squares approximation built from the ``m`` pairs
   ``S = [theta_i - theta_mean]``, ``Y = [g_i - g_mean]`` (both ``n x m``):

   ``H = h0 I + (S - h0 Y) (Y^T Y + lambda I)^{-1} Y^T``             (type-II Broyden form).

   ``h0 = 0`` gives the paper's ``H = S (Y^T Y + lambda I)^{-1} Y^T``: ``H Y ~ S`` (the
   secant conditions in the least-squares sense) and ``H = 0`` on the complement of
   ``span(Y)``, so with ``h0 = 0`` the only progress beyond model averaging is along the
   ``m - 1`` directions of ``span(S)``.  ``h0 > 0`` keeps the secant conditions and acts as
   ``h0 I`` (an SGD step of size ``eta * h0``) on the complement.

Every minibatch's gradient is used once and no call evaluates the closure twice: a round is
``sync_period`` calls, the sync call's gradient feeds ``g_mean`` and ``Y``.

Defaults: ``sync_period=8``, ``eta=1``, ``damping=1e-3`` (relative), ``h0=None`` (= lr),
``max_step_ratio=4``, ``max_condition=1e12``, ``momentum_sync="average"``.

Reconstruction choices (not fixed by the paper):

* ``h0`` defaults to the current learning rate of the first parameter group (``h0=None``;
  it follows learning-rate schedules).  Then with ``eta = 1`` the sync is "average, then one
  large-batch SGD step on ``g_mean``" plus the secant correction inside ``span(S, Y)``, and
  if the secant part is switched off (fallback, or ``Y = 0``) the method degrades to local
  SGD with model averaging followed by a synchronous SGD step instead of stalling.
* The damping is relative, hence scale-free:
  ``lambda = damping * trace(Y^T Y) / (m - 1) + 1e-300`` (the mean non-zero eigenvalue of the
  centred Gram matrix times ``damping``; the absolute floor only keeps ``lambda > 0`` when
  all gradients coincide).  Scaling the loss scales ``Y`` and ``lambda`` together, so the
  step does not change.
* The centred columns satisfy ``S 1 = Y 1 = 0``, so ``Y^T Y`` is always singular in the
  direction ``1``; the solve is done in an orthonormal basis ``Q`` (``m x (m-1)``, Helmert)
  of ``1^perp``: ``S (Y^T Y + lambda I)^{-1} Y^T = (SQ) ((YQ)^T YQ + lambda I)^{-1} (YQ)^T``
  exactly, and the reported condition number is that of the ``(m-1) x (m-1)`` system.
* Safeguards, counted in ``last_stats()``:

  - *fallback*: when the damped Gram matrix has condition number above ``max_condition``
    or any sync quantity is non-finite, the secant part is dropped (``H = h0 I``: plain
    averaging plus the ``h0`` step);
  - *cap*: when ``eta * |H g_mean|`` exceeds ``max_step_ratio`` times the RMS local
    displacement ``sqrt(mean_i |theta_i - theta_bar|^2)``, the step is scaled down to that
    norm (a trust region whose radius is what the local SGD steps themselves moved).

* Momentum (``momentum_sync``): the sync moves the parameters to a point none of the local
  trajectories visited, so the workers' momentum buffers have to be reconciled.  ``"average"``
  (default) replaces them by their mean, the velocity a synchronous run would carry (it
  travels in the sync's ``all_reduce``, no extra collective); ``"reset"`` zeroes them;
  ``"keep"`` leaves each worker its own.  ``"average"`` and ``"reset"`` leave all workers with
  identical optimizer states at round boundaries.  Measured on ``bench/bench_ahsgd.py``
  (momentum 0.9, ``sync_period`` 8, 800 steps): training loss 0.040 with ``"average"``,
  0.041 with ``"keep"``, 0.100 with ``"reset"``: restarting the heavy ball every 8 steps
  throws away most of its acceleration.
* At world size 1 (``reducer=None`` means :class:`~asr_hf.optim.base.LocalReducer`) there
  are no secant pairs: the method is plain SGD (the sync call takes an ordinary local step,
  momentum is kept) and equals :class:`torch.optim.SGD` with the same ``lr``, ``momentum``
  and ``weight_decay``; the sync is a no-op apart from statistics.

Communication per sync (for ``n`` parameters): an ``all_gather`` of each worker's ``2 n``
vectors ``(theta_i - theta_bar, g_i)`` in chunks of ``gather_chunk`` elements, from which
every worker forms the ``2m x 2m`` float64 Gram matrix (memory ``2 m * gather_chunk``, never
``n x m``), then one ``all_reduce`` of ``a_i (theta_i - theta_bar) + b_i g_i`` (``n``; ``2 n``
with the momentum buffers to average), whose sum is ``theta_new - theta_bar``.  The small
solve runs in float64 on the CPU from identical inputs, so every worker computes identical
coefficients and ends with bitwise-identical parameters.  Per step that is one ``all_gather``
of ``2 n`` and one ``all_reduce`` of ``n`` to ``2 n`` every ``sync_period`` calls, against one
``all_reduce`` of ``n`` every call for synchronous data-parallel SGD.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
from torch import nn

from asr_hf.optim.base import Closure, LocalReducer, LossKind, OptimizerKind, Reducer
from asr_hf.optim.layout import ParamLayout
from asr_hf.optim.momentum import BUFFER_KEY, MomentumRule, momentum_
from asr_hf.optim.registry import register_optimizer

Tensor = torch.Tensor
log = logging.getLogger(__name__)

MOMENTUM_SYNC_MODES = ("average", "reset", "keep")
"""What a sync does to the local momentum buffers (see :class:`ApproxHessianSGD`)."""

DAMPING_FLOOR = 1e-300
"""Absolute floor added to the relative damping (keeps ``lambda > 0`` when ``Y = 0``)."""


# --------------------------------------------------------------------------------------
# Pure math (dense, small): used by the optimizer and checked directly by the tests
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecantSolve:
    """Diagnostics of one damped Gram solve.

    Attributes:
        condition: ``max(mu + lambda) / min(mu + lambda)`` over the eigenvalues ``mu`` of the
            Gram matrix (``inf`` when singular or non-finite).
        rank: number of eigen-directions used (those above ``rcond`` times the largest).
    """

    condition: float
    rank: int


def secant_coefficients(gram: Tensor, rhs: Tensor, damping: float, rcond: float = 1e-12) -> tuple[Tensor, SecantSolve]:
    """``c = (gram + damping I)^+ rhs`` for a symmetric PSD ``gram`` (``k x k``), in float64.

    Solved through the eigendecomposition ``gram = V diag(mu) V^T``: eigen-directions with
    ``mu + damping <= rcond * max(mu + damping)`` are dropped (pseudo-inverse), so a singular
    undamped Gram matrix gives the least-squares minimum-norm coefficients.  Non-finite input
    gives ``c = 0`` and ``condition = inf``.

    Args:
        gram: ``(k, k)`` symmetric positive semi-definite matrix (``Y^T Y``).
        rhs: ``(k,)`` right-hand side (``Y^T g``).
        damping: absolute ``lambda >= 0``.
        rcond: relative eigenvalue cut-off.

    Returns:
        ``(c, info)`` with ``c`` of shape ``(k,)`` (float64, on ``gram``'s device).
    """
    gram = gram.to(torch.float64)
    rhs = rhs.to(torch.float64)
    k = gram.shape[0]
    if k == 0:
        return rhs.new_zeros(0), SecantSolve(1.0, 0)
    if not (torch.isfinite(gram).all() and torch.isfinite(rhs).all()) or not math.isfinite(damping):
        return rhs.new_zeros(k), SecantSolve(math.inf, 0)
    mu, v = torch.linalg.eigh(0.5 * (gram + gram.T))
    w = mu.clamp_min(0.0) + damping
    wmax = float(w.max())
    keep = w > rcond * wmax
    if wmax <= 0.0 or not bool(keep.any()):
        return rhs.new_zeros(k), SecantSolve(math.inf, 0)
    vk = v[:, keep]
    coef = vk @ ((vk.T @ rhs) / w[keep])
    wmin = float(w.min())
    cond = wmax / wmin if wmin > 0.0 else math.inf
    return coef, SecantSolve(cond, int(keep.sum()))


def multisecant_direction(
    S: Tensor, Y: Tensor, g: Tensor, damping: float = 0.0, h0: float = 0.0, rcond: float = 1e-12
) -> Tensor:
    """The multi-secant quasi-Newton direction ``d = H g`` (dense; float64 inside).

    ``H = h0 I + (S - h0 Y) (Y^T Y + damping I)^{-1} Y^T`` (type-II Broyden multi-secant
    form); ``h0 = 0`` gives ``H = S (Y^T Y + damping I)^{-1} Y^T``.  With ``Y = A S``, ``S``
    square and invertible and ``damping = 0``, ``H = A^{-1}`` (the Newton direction).
    The inverse is the pseudo-inverse of :func:`secant_coefficients`.

    Args:
        S: ``(n, k)`` parameter differences (the optimizer passes centred ones).
        Y: ``(n, k)`` gradient differences, column ``j`` paired with ``S[:, j]``.
        g: ``(n,)`` the gradient to precondition.
        damping: absolute ``lambda >= 0`` added to ``Y^T Y``.
        h0: the scalar step on the complement of ``span(Y)``.

    Returns:
        ``d`` of shape ``(n,)``, float64.
    """
    S, Y, g = S.to(torch.float64), Y.to(torch.float64), g.to(torch.float64)
    c, _ = secant_coefficients(Y.T @ Y, Y.T @ g, damping, rcond)
    d = (S - h0 * Y) @ c
    return d + h0 * g if h0 else d


def helmert_basis(m: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``(m, m - 1)`` orthonormal basis of the vectors orthogonal to ``1`` (Helmert contrasts)."""
    q = torch.zeros(m, max(m - 1, 0), dtype=dtype)
    for k in range(1, m):
        q[:k, k - 1] = 1.0 / math.sqrt(k * (k + 1))
        q[k, k - 1] = -k / math.sqrt(k * (k + 1))
    return q


@dataclass(frozen=True)
class SyncPlan:
    """What every worker needs from one sync: ``theta_new = theta_bar + sum_i a_i u_i + b_i g_i``
    with ``u_i = theta_i - theta_bar``; plus diagnostics.

    Attributes:
        a: ``(m,)`` float64 weights of the displacements ``u_i``.
        b: ``(m,)`` float64 weights of the gradients ``g_i``.
        step_norm: ``|theta_new - theta_mean| = eta * |H g_mean|`` after the cap.
        secant_norm: ``eta * |(S - h0 Y) c|``, the secant correction's share before the cap.
        disp_rms: ``sqrt(mean_i |u_i|^2)``.
        grad_mean_norm: ``|g_mean|``.
        damping_abs: the absolute ``lambda`` used.
        condition: condition number of the damped reduced Gram matrix.
        rank: eigen-directions used in the solve.
        fallback: the secant part was dropped (ill-conditioned or non-finite).
        capped: the step was scaled down to ``max_step_ratio * disp_rms``.
    """

    a: Tensor
    b: Tensor
    step_norm: float
    secant_norm: float
    disp_rms: float
    grad_mean_norm: float
    damping_abs: float
    condition: float
    rank: int
    fallback: bool
    capped: bool


def plan_sync(
    gram: Tensor,
    *,
    eta: float,
    damping: float,
    h0: float,
    max_step_ratio: Optional[float],
    max_condition: float,
    rcond: float = 1e-12,
) -> SyncPlan:
    """The sync update from the Gram matrix of the workers' vectors (float64, ``2m x 2m``).

    ``gram`` is the Gram matrix of ``[u_1 .. u_m, g_1 .. g_m]`` (``u_i = theta_i - theta_bar``).
    With ``U = [u_i]``, ``G = [g_i]``, ``Q`` = :func:`helmert_basis` and ``P = I - 11^T/m``:
    ``S = U P``, ``Y = G P``; the reduced system is ``((GQ)^T GQ + lambda I) c' = (GQ)^T g_mean``,
    ``c = Q c'`` (so ``P c = c``), and

    ``d = H g_mean = h0 g_mean + (S - h0 Y) c = U alpha + G beta``,
    ``alpha = c``, ``beta = h0 (1/m - c)``;
    ``theta_new = theta_bar + U 1/m - eta rho d``, ``rho = 1`` unless capped.

    Norms come from ``gram``: ``|U x + G y|^2 = [x; y]^T gram [x; y]``.
    """
    gram = gram.detach().to("cpu", torch.float64)
    m = gram.shape[0] // 2
    ones = torch.full((m,), 1.0 / m, dtype=torch.float64)
    uu, gg = gram[:m, :m], gram[m:, m:]
    disp_rms = math.sqrt(max(float(torch.trace(uu)) / m, 0.0))
    gmean_sq = float(ones @ gg @ ones)
    q = helmert_basis(m)
    red = q.T @ gg @ q
    rhs = q.T @ gg @ ones
    lam = damping * float(torch.trace(red)) / max(m - 1, 1) + DAMPING_FLOOR
    coef, info = secant_coefficients(red, rhs, lam, rcond)
    c = q @ coef
    finite = bool(torch.isfinite(gram).all()) and math.isfinite(lam)
    fallback = not finite or not math.isfinite(info.condition) or info.condition > max_condition
    fallback = fallback or not bool(torch.isfinite(c).all())
    if fallback:
        c = torch.zeros(m, dtype=torch.float64)

    def norm(x: Tensor, y: Tensor) -> float:
        w = torch.cat([x, y])
        return math.sqrt(max(float(w @ gram @ w), 0.0))

    alpha, beta = c, h0 * (ones - c)
    dnorm = norm(alpha, beta)
    secant_norm = eta * norm(c, -h0 * c)
    rho = 1.0
    capped = False
    if max_step_ratio is not None and math.isfinite(dnorm) and eta * dnorm > max_step_ratio * disp_rms:
        rho = max_step_ratio * disp_rms / (eta * dnorm)
        capped = True
    a = ones - eta * rho * alpha
    b = -eta * rho * beta
    return SyncPlan(
        a=a, b=b, step_norm=eta * rho * dnorm, secant_norm=secant_norm, disp_rms=disp_rms,
        grad_mean_norm=math.sqrt(max(gmean_sq, 0.0)), damping_abs=lam, condition=info.condition, rank=info.rank,
        fallback=fallback, capped=capped,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# The optimizer
# --------------------------------------------------------------------------------------


class ApproxHessianSGD(torch.optim.Optimizer):
    """Local SGD with an approximated-Hessian (multi-secant) sync step; see the module docstring.

    :attr:`~asr_hf.optim.base.OptimizerKind.MINIBATCH`: the trainer calls ``step(closure)``
    once per minibatch; ``closure()`` zeroes the gradients, runs forward + backward on this
    rank's minibatch and returns the loss.  Calls ``1 .. sync_period - 1`` of a round are
    local SGD steps (torch's SGD update: ``d = grad + wd * theta``, ``buf = momentum * buf + d``,
    ``theta -= lr * buf``); call ``sync_period`` is the sync.  With a world size of 1
    (``reducer=None``) it is plain SGD, identical to :class:`torch.optim.SGD`.

    All parameters must share one dtype and device.  All workers must start from the same
    parameters: before its first step the optimizer broadcasts rank 0's (a no-op after the
    trainer's own broadcast).  Parameters without a gradient count as zero gradient (plus
    weight decay) in the sync; a parameter must get gradients on every worker or on none
    (momentum buffers are averaged by position).

    Args:
        params: parameters or parameter groups (groups may set ``lr``, ``momentum``,
            ``weight_decay`` for the local steps).
        lr: local SGD learning rate.
        sync_period: calls per round (>= 2): ``sync_period - 1`` local steps, then the sync.
        eta: step size of the quasi-Newton step from ``theta_mean``.
        damping: relative Tikhonov damping; ``lambda = damping * trace(Y^T Y) / (m - 1)``.
        h0: scalar step on the complement of ``span(Y)``; ``None``: the first group's
            current ``lr``.
        momentum: local SGD momentum.
        momentum_sync: what the sync does to the momentum buffers: ``"average"``,
            ``"reset"`` or ``"keep"`` (module docstring).
        weight_decay: L2 coefficient (in the local steps and in the sync gradients).
        max_step_ratio: cap on ``eta |H g_mean|`` relative to the RMS local displacement
            (``None``: no cap).
        max_condition: fall back to plain averaging (``H = h0 I``) when the damped Gram
            matrix's condition number exceeds this.
        gather_chunk: elements per vector per ``all_gather`` (bounds the sync's memory).
        reducer: the workers' collectives; ``None`` means a single process.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        *,
        sync_period: int = 8,
        eta: float = 1.0,
        damping: float = 1e-3,
        h0: Optional[float] = None,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        max_step_ratio: Optional[float] = 4.0,
        max_condition: float = 1e12,
        momentum_sync: str = "average",
        gather_chunk: int = 1 << 22,
        reducer: Optional[Reducer] = None,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if int(sync_period) != sync_period or sync_period < 2:
            raise ValueError(f"sync_period must be an integer >= 2, got {sync_period}")
        if eta <= 0.0:
            raise ValueError(f"eta must be > 0, got {eta}")
        if damping < 0.0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        if h0 is not None and h0 < 0.0:
            raise ValueError(f"h0 must be >= 0 or None, got {h0}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if max_step_ratio is not None and max_step_ratio <= 0.0:
            raise ValueError(f"max_step_ratio must be > 0 or None, got {max_step_ratio}")
        if momentum_sync not in MOMENTUM_SYNC_MODES:
            raise ValueError(f"momentum_sync must be one of {MOMENTUM_SYNC_MODES}, got {momentum_sync!r}")
        if gather_chunk < 1:
            raise ValueError(f"gather_chunk must be >= 1, got {gather_chunk}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        plist = self._params()
        if not plist:
            raise ValueError("ApproxHessianSGD got no parameters")
        if len({(p.dtype, p.device) for p in plist}) > 1:
            raise ValueError("ApproxHessianSGD needs all parameters on one device with one dtype")
        self.sync_period = int(sync_period)
        self.eta = float(eta)
        self.damping = float(damping)
        self.h0 = None if h0 is None else float(h0)
        self.max_step_ratio = None if max_step_ratio is None else float(max_step_ratio)
        self.max_condition = float(max_condition)
        self.gather_chunk = int(gather_chunk)
        self.momentum_sync = str(momentum_sync)
        self.reducer: Reducer = reducer if reducer is not None else LocalReducer()
        self.round_step = 0  # calls done in the current round
        self.steps = 0
        self.syncs = 0
        self.fallbacks = 0
        self.capped = 0
        self._last: dict[str, float] = {}

    # ---------------------------------------------------------------- helpers
    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def layout(self) -> ParamLayout:
        """The flat ``(n,)`` view of every parameter, in parameter-group order (the order
        of the sync's vectors; identical on every worker)."""
        return ParamLayout([(f"{gi}.{j}", p) for gi, g in enumerate(self.param_groups) for j, p in enumerate(g["params"])])

    def current_h0(self) -> float:
        """``h0``, or the first parameter group's current learning rate when ``h0`` is None."""
        return float(self.param_groups[0]["lr"]) if self.h0 is None else self.h0

    @property
    def at_round_boundary(self) -> bool:
        """True between rounds: every worker holds the same parameters (and, unless
        ``momentum_sync="keep"``, the same optimizer state)."""
        return self.round_step == 0

    def _local_step(self) -> None:
        """torch.optim.SGD's update (no dampening, no Nesterov)."""
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                d_p = momentum_(self.state[p], d_p, mom, MomentumRule.HEAVY_BALL)
                p.add_(d_p, alpha=-lr)

    def _flat_vectors(self, layout: ParamLayout) -> tuple[Tensor, Tensor]:
        """``u = theta_i - theta_bar`` and ``g_i = grad + wd * theta_i``, flat ``(n,)``."""
        us, gs = [], []
        for group in self.param_groups:
            wd = group["weight_decay"]
            for p in group["params"]:
                us.append(p.detach() - self.state[p]["round_start"])
                g = p.grad.detach() if p.grad is not None else torch.zeros_like(p)
                if wd != 0:
                    g = g.add(p.detach(), alpha=wd)
                gs.append(g)
        return layout.flatten(us), layout.flatten(gs)

    def _gram(self, u: Tensor, g: Tensor) -> Tensor:
        """Float64 Gram matrix of every worker's ``[u_i; g_i]`` via chunked ``all_gather``."""
        m = self.reducer.world_size
        gram = torch.zeros(2 * m, 2 * m, dtype=torch.float64, device=u.device)
        n = u.numel()
        for start in range(0, n, self.gather_chunk):
            stop = min(start + self.gather_chunk, n)
            z = torch.stack([u[start:stop], g[start:stop]])  # (2, k)
            allz = self.reducer.all_gather(z)  # (m, 2, k)
            zz = allz.transpose(0, 1).reshape(2 * m, stop - start).to(torch.float64)
            gram += zz @ zz.T
        return gram

    def _sync(self, stats: dict[str, float]) -> None:
        comm0 = getattr(self.reducer, "comm_seconds", None)
        t0 = time.perf_counter()
        rank = self.reducer.rank
        layout = self.layout()
        u, g = self._flat_vectors(layout)
        plan = plan_sync(
            self._gram(u, g), eta=self.eta, damping=self.damping, h0=self.current_h0(),
            max_step_ratio=self.max_step_ratio, max_condition=self.max_condition,
        )  # fmt: skip
        params = layout.params
        delta = u.mul(float(plan.a[rank])).add_(g, alpha=float(plan.b[rank]))
        # momentum buffers to average travel in the same all_reduce (one collective per sync)
        moms = [p for p in params if BUFFER_KEY in self.state[p]] if self.momentum_sync == "average" else []
        if moms:
            delta = torch.cat([delta] + [self.state[p][BUFFER_KEY].reshape(-1) for p in moms])
        self.reducer.all_reduce_(delta)  # [:n]: theta_new - theta_bar; [n:]: summed momentum
        for p, step in zip(params, layout.unflatten(delta[: layout.numel])):
            state = self.state[p]
            p.copy_(state["round_start"] + step)
            if self.momentum_sync == "reset":
                state.pop(BUFFER_KEY, None)
        offset = layout.numel
        for p in moms:
            buf = self.state[p][BUFFER_KEY]
            buf.copy_(delta[offset : offset + buf.numel()].view_as(buf)).div_(self.reducer.world_size)
            offset += buf.numel()
        if plan.fallback:
            log.debug("sync %d: secant step dropped (condition %.3g)", self.syncs + 1, plan.condition)
        self.syncs += 1
        self.fallbacks += int(plan.fallback)
        self.capped += int(plan.capped)
        stats.update(
            step_norm=plan.step_norm, secant_norm=plan.secant_norm, disp_rms=plan.disp_rms,
            grad_mean_norm=plan.grad_mean_norm, damping_abs=plan.damping_abs, gram_cond=plan.condition,
            secant_rank=float(plan.rank), fallback=float(plan.fallback), capped=float(plan.capped),
            h0=self.current_h0(), sync_seconds=time.perf_counter() - t0,
        )  # fmt: skip
        if comm0 is not None:
            stats["comm_seconds"] = float(getattr(self.reducer, "comm_seconds")) - comm0

    # ---------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Optional[Closure] = None) -> Optional[Tensor]:  # type: ignore[override]
        """One call: a local SGD step, or (every ``sync_period``-th call) the sync."""
        world = self.reducer.world_size
        if world > 1:
            if self.steps == 0:  # fresh start: every worker takes rank 0's parameters
                for p in self._params():
                    self.reducer.broadcast_(p.data, src=0)
            if self.round_step == 0:
                for p in self._params():
                    state = self.state[p]
                    if "round_start" in state:
                        state["round_start"].copy_(p.detach())
                    else:
                        state["round_start"] = p.detach().clone()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad.detach() for p in self._params() if p.grad is not None]
        gnorm = float(torch.linalg.vector_norm(torch.stack([x.norm() for x in grads]))) if grads else 0.0
        self.steps += 1
        self.round_step += 1
        sync = self.round_step >= self.sync_period
        stats: dict[str, float] = {"lr": float(self.param_groups[0]["lr"]), "grad_norm": gnorm, "synced": float(sync)}
        if sync and world > 1:
            self._sync(stats)
        else:
            self._local_step()
            if sync:  # world size 1: nothing to combine
                self.syncs += 1
        if sync:
            self.round_step = 0
        if loss is not None:
            stats["loss"] = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        stats.update(syncs=float(self.syncs), fallbacks=float(self.fallbacks), capped_total=float(self.capped))
        comm = getattr(self.reducer, "comm_seconds", None)
        if comm is not None:
            stats["comm_seconds_total"] = float(comm)
        self._last = stats
        return loss

    def last_stats(self) -> dict[str, float]:
        """Numbers of the last call.

        Always: ``loss`` (with a closure), ``lr``, ``grad_norm`` (this rank's raw minibatch
        gradient), ``synced`` (1 on sync calls), running totals ``syncs``, ``fallbacks``,
        ``capped_total`` (and ``comm_seconds_total`` when the reducer times its collectives).
        On sync calls with ``m > 1`` also: ``step_norm`` (``eta |H g_mean|`` after the cap),
        ``secant_norm``, ``disp_rms``, ``grad_mean_norm``, ``damping_abs``, ``gram_cond``,
        ``secant_rank``, ``fallback``, ``capped``, ``h0``, ``sync_seconds`` and
        ``comm_seconds`` (the sync's collectives).
        """
        return dict(self._last)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """torch's state (momentum buffers, round-start parameters) plus the round counters.

        Between syncs the workers' states differ: an exact multi-worker resume needs every
        rank's state dict (the trainer gathers them); at a round boundary they are equal.
        """
        sd = super().state_dict()
        sd["ahsgd"] = {
            "round_step": self.round_step, "steps": self.steps, "syncs": self.syncs,
            "fallbacks": self.fallbacks, "capped": self.capped,
        }  # fmt: skip
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sd = dict(state_dict)
        extra = sd.pop("ahsgd", None)
        if extra is None:
            raise ValueError("not an ApproxHessianSGD state dict (no 'ahsgd' entry)")
        super().load_state_dict(sd)
        self.round_step = int(extra["round_step"])
        self.steps = int(extra["steps"])
        self.syncs = int(extra["syncs"])
        self.fallbacks = int(extra["fallbacks"])
        self.capped = int(extra["capped"])


@register_optimizer(
    "ahsgd", kind=OptimizerKind.MINIBATCH, data_parallel="reducer", options_from=(ApproxHessianSGD,),
    preset={"lr": 0.1}, bf16_safe=True,
)  # fmt: skip
def build_ahsgd(
    model: nn.Module, loss_kind: LossKind, *, reducer: Optional[Reducer] = None, **options: Any
) -> ApproxHessianSGD:
    """Multi-worker local SGD with an approximated-Hessian (multi-secant) sync step (arXiv 1709.05069)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return ApproxHessianSGD(params, reducer=reducer, **options)


__all__ = [
    "ApproxHessianSGD",
    "SecantSolve",
    "SyncPlan",
    "build_ahsgd",
    "helmert_basis",
    "multisecant_direction",
    "plan_sync",
    "secant_coefficients",
]
