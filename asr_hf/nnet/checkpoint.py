"""Training checkpoints: what an exact resume needs, written atomically.

A checkpoint (``<exp>/checkpoints/ckpt-<n>.pt``, ``n`` = completed epochs or HF iterations)
holds the model and optimizer state dicts (or every rank's, for optimizers whose ranks
differ between syncs), the trainer's RNGs (its minibatch generator, torch's CPU and CUDA
generators, NumPy's and Python's) and the :class:`TrainState`; the newest
``trainer.keep_checkpoints`` are kept.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from asr_hf.utils.errors import DataError
from asr_hf.utils.io import atomic_output

#: what a checkpoint of another run is told to do
RESTART_HINT = "train into another trainer.exp_dir, or set trainer.resume=false to start over"


@dataclass
class TrainState:
    """Everything besides model/optimizer that an exact resume needs."""

    epoch: int = 0  # completed epochs (MINIBATCH) or HF iterations (SAMPLED)
    wall_s: float = 0.0  # training wall time so far, summed over resumed runs
    frames_seen: int = 0
    lr_scale: float = 1.0
    halving: bool = False
    best_heldout: float = float("inf")  # held-out loss of the last accepted epoch
    best_heldout_acc: float = 0.0  # and its frame accuracy
    lowest_heldout: float = float("inf")  # lowest held-out loss of any epoch (trainer.keep_lowest_heldout)
    lowest_epoch: int = 0  # the epoch it came from (its weights: the checkpoint's "lowest_model")
    done: bool = False
    stop_reason: str = ""  # converged | newbob | time_budget | max_iters / max_epochs
    world_size: int = 1  # processes of the run that wrote the state
    nonfinite_failures: int = 0  # consecutive epochs / HF iterations with a non-finite step
    history: list[dict[str, Any]] = field(default_factory=list)


def checkpoint_path(exp: Path, n: int) -> Path:
    """``<exp>/checkpoints/ckpt-<n:04d>.pt``."""
    return exp / "checkpoints" / f"ckpt-{n:04d}.pt"


def newest_checkpoint(exp: Path) -> Optional[Path]:
    """The checkpoint of the most epochs / iterations under ``exp`` (``None``: none)."""
    ckpts = sorted((exp / "checkpoints").glob("ckpt-*.pt"))
    return ckpts[-1] if ckpts else None


def to_cpu(obj: Any) -> Any:
    """A (nested) state dict with every tensor copied to the CPU (for gathering across ranks)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)  # a copy also when it is on the CPU already
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def rng_states(generator: torch.Generator) -> dict[str, Any]:
    """The trainer's ``generator`` and the process-wide RNGs, as checkpoint entries."""
    return {
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
    }


def restore_rng_states(payload: dict[str, Any], generator: torch.Generator) -> None:
    """Undo :func:`rng_states` from a checkpoint ``payload``."""
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    np.random.set_state(payload["numpy_rng"])
    random.setstate(payload["python_rng"])


def write_checkpoint(path: Path, payload: dict[str, Any], keep: int) -> None:
    """Save ``payload`` to ``path`` atomically, then delete all but the newest ``keep``
    (at least 1) checkpoints of its directory."""
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    for old in sorted(path.parent.glob("ckpt-*.pt"))[: -max(1, keep)]:
        old.unlink(missing_ok=True)


def read_checkpoint(path: Path, device: torch.device) -> tuple[dict[str, Any], int]:
    """The checkpoint's payload (tensors on ``device``) and the world size that wrote it.

    Raises:
        DataError: naming ``path``, when it cannot be read.
    """
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
        saved_world = int(payload["state"].get("world_size", 1))
    except Exception as exc:
        raise DataError(str(path), f"unreadable checkpoint ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                                   "delete it or set trainer.resume=false") from exc  # fmt: skip
    return payload, saved_world


def check_checkpoint_matches(
    path: Path, payload: dict[str, Any], optimizer_name: str, model: torch.nn.Module, model_desc: Any
) -> None:
    """Refuse a checkpoint of another optimizer or model (parameter names / shapes).

    Raises:
        DataError: naming ``path`` and the first difference.
    """
    saved_opt = payload.get("optimizer_name")
    if saved_opt is not None and saved_opt != optimizer_name:
        raise DataError(str(path), f"checkpoint of optimizer {saved_opt}, this run uses {optimizer_name}; {RESTART_HINT}")
    states = payload.get("rank_states") or [payload]
    saved = {k: tuple(v.shape) for k, v in states[0]["model"].items()}
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if saved != mine:
        shape = lambda s: "x".join(map(str, s)) if s is not None else "absent"  # noqa: E731
        k = next(k for k in [*mine, *saved] if saved.get(k) != mine.get(k))
        raise DataError(
            str(path),
            f"checkpoint of a different model ({k}: {shape(saved.get(k))} in the checkpoint, "
            f"{shape(mine.get(k))} in this run's {model_desc}); {RESTART_HINT}",
        )


__all__ = [
    "RESTART_HINT",
    "TrainState",
    "check_checkpoint_matches",
    "checkpoint_path",
    "newest_checkpoint",
    "read_checkpoint",
    "restore_rng_states",
    "rng_states",
    "to_cpu",
    "write_checkpoint",
]


def finished_run(cfg: Any, root: Path) -> Optional[Path]:
    """The exp dir when it holds a finished run of exactly ``cfg``, else None.

    Finished means ``final.pt`` and ``train_summary.json`` exist and ``config.yaml`` is
    ``cfg`` (resolved).  A run under any other config is left to the trainer, which resumes
    it where ``trainer.resume`` says (a converged run under a tighter rule trains on).  A
    finished run older than its training data (features or alignments remade since) is
    refused: resuming it would mix two sets of targets.
    """
    from omegaconf import OmegaConf

    from asr_hf.data.paths import cuts_file
    from asr_hf.nnet.config import exp_dir_for

    exp = Path(root) / exp_dir_for(cfg)
    summary, config = exp / "train_summary.json", exp / "config.yaml"
    if not (summary.is_file() and (exp / "final.pt").is_file() and config.is_file()):
        return None
    if config.read_text() != OmegaConf.to_yaml(cfg, resolve=True):
        return None
    d = cfg.data
    for data in (cuts_file(Path(root) / d.feats_dir, d.train_split), cuts_file(Path(root) / d.ali_dir, d.train_split)):
        if data.is_file() and data.stat().st_mtime > summary.stat().st_mtime:
            raise DataError(str(exp), f"finished run older than its training data ({data} is newer than "
                            f"{summary.name}); {RESTART_HINT}")  # fmt: skip
    return exp
