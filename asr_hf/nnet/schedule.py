"""The trainer's stopping and learning-rate rules on the held-out set.

* :func:`newbob`: Kaldi nnet1's newbob schedule (the optimizers whose registry entry says
  ``newbob``, i.e. SGD);
* :func:`converged`: ``trainer.convergence``, the stopping rule of every other optimizer.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Optional, Sequence

from asr_hf.nnet.checkpoint import TrainState

log = logging.getLogger(__name__)


def newbob(
    state: TrainState,
    nb: Any,
    loss: float,
    acc: float,
    rollback: Optional[Callable[[], tuple[float, float]]],
    set_lr_scale: Callable[[float], None],
) -> tuple[float, float]:
    """Kaldi nnet1's schedule on the held-out set.  ``criterion=accuracy`` (nnet1 as
    used in the papers' era): an epoch must raise frame accuracy or it is rolled back;
    halving starts once the gain is below ``start_halving_inc`` points and training
    stops once halving and below ``end_halving_inc``, or when an epoch is rejected while
    halving.  ``criterion=loss`` (later nnet1): the same on cross-entropy with relative
    thresholds ``*_halving_impr``.

    Args:
        state: the run's state; ``best_heldout*``, ``halving``, ``lr_scale``, ``done`` and
            ``stop_reason`` are updated in place.
        nb: ``trainer.newbob`` (:class:`~asr_hf.nnet.config.NewbobConf`).
        loss, acc: the epoch's held-out cross-entropy and frame accuracy.
        rollback: restores the epoch's start and returns its held-out ``(loss, acc)``
            (``None``: no snapshot, the epoch cannot be rejected).
        set_lr_scale: applies a new learning-rate scale to the optimizer.

    Returns:
        The held-out ``(loss, acc)`` of the parameters training continues from.
    """
    by_acc = nb.criterion == "accuracy"
    prev_loss, prev_acc = state.best_heldout, state.best_heldout_acc
    finite = math.isfinite(loss) and math.isfinite(acc)  # NaN is worse than anything
    worse = not finite or (acc <= prev_acc if by_acc else not loss < prev_loss)
    if worse and rollback is not None:
        what = f"accuracy {100 * acc:.2f}% <= {100 * prev_acc:.2f}%" if by_acc else f"loss {loss:.4f} >= {prev_loss:.4f}"
        if not finite:
            what = f"loss {loss} / accuracy {acc} not finite"
        loss, acc = rollback()
        if state.halving and state.epoch >= nb.min_epochs:
            # nnet1's train_scheduler.sh: a rejected epoch leaves the improvement at 0,
            # below end_halving, so training that is already halving stops here
            log.info("epoch rejected while halving: held-out %s; rolled back, stopping", what)
            state.done, state.stop_reason = True, "newbob"
            return loss, acc
        log.info("epoch rejected: held-out %s; rolling back, halving lr", what)
        state.halving = True
        state.lr_scale *= nb.halving_factor
        set_lr_scale(state.lr_scale)
        return loss, acc
    if by_acc:
        impr, start_thr, end_thr, unit = 100 * (acc - prev_acc), nb.start_halving_inc, nb.end_halving_inc, "points"
    else:
        impr = (prev_loss - loss) / max(abs(prev_loss), 1e-12)
        start_thr, end_thr, unit = nb.start_halving_impr, nb.end_halving_impr, "relative"
    state.best_heldout, state.best_heldout_acc = loss, acc
    if state.halving and impr < end_thr and state.epoch >= nb.min_epochs:
        log.info("newbob: improvement %.4f (%s) < %.4f, stopping", impr, unit, end_thr)
        state.done, state.stop_reason = True, "newbob"
    if impr < start_thr:
        state.halving = True
    if state.halving:
        state.lr_scale *= nb.halving_factor
        set_lr_scale(state.lr_scale)
    return loss, acc


def converged(history: Sequence[dict[str, Any]], conv: Any) -> bool:
    """The stopping rule of every optimizer not on newbob (``trainer.convergence``,
    :class:`~asr_hf.nnet.config.ConvergenceConf`): over the last ``window`` logged rows that
    took a step (an HF row with ``opt_accepted`` 0 does not count; rows without the key,
    epochs and the initial evaluation, do), the held-out cross-entropy ``L`` improved by less
    than ``rel_tol``, ``(L[k - window] - L[k]) / |L[k - window]| < rel_tol``; or the last
    ``max_rejected`` HF iterations all rejected their step."""
    if not conv.enabled:
        return False
    rejected = 0
    for r in reversed(history):
        if r.get("opt_accepted", 1.0) != 0:
            break
        rejected += 1
    if conv.max_rejected and rejected >= conv.max_rejected:
        log.info("converged: the last %d HF iterations all rejected their step (held-out CE %.5f)",
                 rejected, float(history[-1]["heldout_loss"]))  # fmt: skip
        return True
    rows = [r for r in history if r.get("opt_accepted", 1.0) != 0]
    if rejected or len(rows) <= conv.window:  # judged at a row that took a step
        return False
    before, now = float(rows[-1 - conv.window]["heldout_loss"]), float(rows[-1]["heldout_loss"])
    gain = (before - now) / max(abs(before), 1e-12)
    if gain < conv.rel_tol:
        log.info("converged: held-out CE %.5f -> %.5f over %d iterations (%.2e relative < %g)",
                 before, now, conv.window, gain, conv.rel_tol)  # fmt: skip
        return True
    return False


__all__ = ["converged", "newbob"]
