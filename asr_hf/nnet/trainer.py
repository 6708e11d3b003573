"""Cross-entropy training of the hybrid DNN with any registered optimizer.

(About 750 lines: one :class:`Trainer` owns the run's set-up, the data join, both training
loops and the divergence guards; checkpoints, schedules, inference, reports and plots live
in :mod:`.checkpoint`, :mod:`.schedule`, :mod:`.inference`, :mod:`.reports` and
:mod:`asr_hf.utils.plot`.)

One trainer drives both optimizer kinds of :mod:`asr_hf.optim.base`:

* MINIBATCH (SGD, Adam, KFAC, K-BFGS...): shuffled epochs of minibatches,
  ``opt.step(closure)``; SGD follows Kaldi nnet1's newbob schedule on held-out
  frame accuracy (halve the learning rate once an epoch gains less than
  ``start_halving_inc`` points, stop below ``end_halving_inc``; an epoch that
  does not improve is rolled back), or on cross-entropy with ``criterion=loss``.
* SAMPLED (Hessian-free family): ``opt.step(SampledData(train, heldout))`` per
  HF iteration; the optimizer draws its own gradient / curvature samples.

Every epoch / HF iteration ends with a checkpoint (:mod:`asr_hf.nnet.checkpoint`) holding
model, optimizer, sampler RNG, schedule and clock; ``resume`` continues a killed run to the
same result as an uninterrupted one.  What the trainer does for an optimizer (bfloat16
autocast, newbob, the bare network, DDP or a reducer) comes from its registry entry
(:class:`~asr_hf.optim.registry.RegisteredOptimizer`); collectives go through the
:class:`~asr_hf.optim.base.Reducer` (this package never imports ``torch.distributed``).
The exp dir gets ``config.yaml``, ``command.txt``, ``train_log.jsonl`` / ``train_log.csv``,
``final.pt``, ``train_summary.json`` and ``heldout_vs_time.png``.

Guards: the config (trainer limits, optimizer name, option names and types) is checked
before anything is loaded or written, and a checkpoint of another model or optimizer is
refused before ``config.yaml`` / ``command.txt`` are replaced.  A minibatch step with a
non-finite loss, gradient or updated parameters rolls its epoch back to the epoch's start
and retries it at half the learning rate; HF iterations reject such steps themselves
(parameters unchanged, lambda raised); ``trainer.max_nonfinite`` in a row stop training
with one :class:`DataError` naming the exp dir.  Newbob rejects a NaN held-out epoch,
``final.pt`` is never written from non-finite weights, and the JSON outputs hold ``null``
for NaN / inf.  On resume ``train_log.jsonl`` is rewritten from the checkpoint's history,
so rows of an epoch logged but not checkpointed (a crash in between) are not duplicated.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import math
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from asr_hf.data.cuts import perturbation_source
from asr_hf.nnet.checkpoint import (
    TrainState,
    check_checkpoint_matches,
    checkpoint_path,
    newest_checkpoint,
    read_checkpoint,
    restore_rng_states,
    rng_states,
    to_cpu,
    write_checkpoint,
)
from asr_hf.nnet.data import FrameSet, Utterances, heldout_split_indices, input_stats, load_utterances, log_priors, pdf_counts
from asr_hf.nnet.inference import resolve_device
from asr_hf.nnet.model import DNN, DNNConfig, num_parameters
from asr_hf.nnet.reports import finite_or_none, json_line, write_csv
from asr_hf.nnet.schedule import converged, newbob
from asr_hf.optim.base import LocalReducer, LossKind, OptimizerKind, SampledData
from asr_hf.optim.distributed import DistReducer, ShardedSource, init_from_env, shard_range, shutdown, wrap_data_parallel
from asr_hf.optim.hf import NONFINITE_CODES
from asr_hf.optim.registry import available_optimizers, build_optimizer, check_optimizer_options, optimizer_info
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import atomic_output
from asr_hf.utils.plot import plot_curve

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model: torch.nn.Module, frames: FrameSet, chunk: int = 8192, reducer=None) -> tuple[float, float]:
    """Mean cross-entropy and frame accuracy over every labelled frame of ``frames``
    (summed over data-parallel workers by ``reducer``: each holds a shard)."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    idx = torch.arange(len(frames))
    for x, y in frames.batches(idx, chunk):
        keep = y >= 0
        logits = model(x[keep])
        total_loss += float(F.cross_entropy(logits, y[keep], reduction="sum"))
        correct += int((logits.argmax(-1) == y[keep]).sum())
        count += int(keep.sum())
    model.train()
    if reducer is not None:
        total_loss, correct, count = reducer.all_reduce_(
            torch.tensor([total_loss, correct, count], dtype=torch.float64)
        ).tolist()
    return total_loss / max(count, 1), correct / max(count, 1)


class NonFiniteStep(Exception):
    """A minibatch step met a non-finite loss, gradient or parameter (1-based ``step``)."""

    def __init__(self, what: str, step: int) -> None:
        super().__init__(f"non-finite {what} at step {step}")
        self.what = what
        self.step = step


class Trainer:
    """Build data, model and optimizer from a composed config and train.

    Args:
        cfg: an OmegaConf config following :class:`asr_hf.nnet.config.TrainConfig`.
        root: directory the config's relative paths are taken from (the recipe dir).
        command: the command line to record in the exp dir.
        clock: the seconds counter that training time (``wall_s``, the time budget) is
            measured with; tests inject a deterministic one so no result depends on the
            machine's speed.
    """

    def __init__(
        self,
        cfg,
        root: Path | str = ".",
        command: Optional[str] = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        from omegaconf import OmegaConf

        from asr_hf.nnet.config import exp_dir_for

        self.cfg = cfg
        self.clock = clock
        self.root = Path(root)
        self.exp = self.root / exp_dir_for(cfg)
        t = cfg.trainer
        # every option is checked before anything is loaded or written
        for key in ("max_epochs", "max_iters", "max_nonfinite", "batch_size"):
            if not int(t[key]) >= 1:
                raise DataError(f"trainer.{key}", f"must be >= 1, got {t[key]}")
        if t.newbob.criterion not in ("accuracy", "loss"):
            raise DataError("trainer.newbob.criterion", f"must be accuracy or loss, got {t.newbob.criterion!r}")
        options = OmegaConf.to_container(cfg.optim.options, resolve=True) or {}
        check_optimizer_options(cfg.optim.name, options)
        if t.bf16 and not optimizer_info(cfg.optim.name).bf16_safe:
            safe = sorted(n for n, e in available_optimizers().items() if e.bf16_safe)
            raise DataError(
                "trainer.bf16",
                f"autocast is supported for {safe}, not {cfg.optim.name!r}: "
                "curvature statistics and CG need float32 (use trainer.tf32 on a GPU)",
            )
        self.device = resolve_device(t.device)
        # torchrun sets WORLD_SIZE/RANK: the same config runs in one process or many
        self.dist = init_from_env(self.device.type, t.dist_backend)
        self.rank = self.dist.rank if self.dist else 0
        self.world_size = self.dist.world_size if self.dist else 1
        self.is_main = self.rank == 0
        self.reducer = DistReducer() if self.dist else LocalReducer()
        if self.dist and self.device.type == "cuda":
            # one GPU per local rank; processes beyond the GPU count share them (gloo backend)
            self.device = torch.device("cuda", self.dist.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        self.info = optimizer_info(cfg.optim.name)
        self.kind = self.info.kind
        if self.world_size > 1 and self.info.data_parallel == "none":
            raise ValueError(
                f"optimizer {cfg.optim.name!r} keeps rank-local curvature statistics and has no data-parallel "
                f"version; run it in one process (world size here: {self.world_size})"
            )
        if not self.is_main:
            logging.getLogger("asr_hf").setLevel(logging.WARNING)  # one rank reports
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = bool(t.tf32)
            torch.backends.cudnn.allow_tf32 = bool(t.tf32)
        self._seed_everything(t.seed)
        self.train_set, self.heldout_set, self.num_pdfs, self.counts = self._load_data()
        # this rank's shards at their offsets in the global (single-process) frame order
        self.train_source = ShardedSource.from_reducer(self.train_set, self.reducer)
        self.heldout_source = ShardedSource.from_reducer(self.heldout_set, self.reducer)
        mcfg = DNNConfig(**{k: cfg.model[k] for k in ("context", "hidden_dim", "num_layers", "activation")})
        self.model = DNN(self.train_set.feat_dim, self.num_pdfs, mcfg).to(self.device)
        if self.dist:  # every rank starts from rank 0's initialisation
            for p in self.model.parameters():
                self.reducer.broadcast_(p.data)
        mean, inv_std = input_stats(self.train_source, seed=t.seed, reducer=self.reducer)
        self.model.norm.mean.copy_(mean.to(self.device))
        self.model.norm.inv_std.copy_(inv_std.to(self.device))
        # optimizers that want the bare nn.Sequential (HF: its fastest curvature path) get it, and
        # sources that apply the model's fixed input normalisation; the parameters are the same.
        target = self.model.net if self.info.bare_net else self.model
        reducer = self.reducer if self.info.data_parallel == "reducer" else None
        try:
            self.optimizer = build_optimizer(cfg.optim.name, target, LossKind.CROSS_ENTROPY, reducer=reducer, **options)
        except DataError:
            raise
        except ValueError as exc:  # the optimizer's own checks of its option values
            raise DataError("optim.options", f"{' '.join(str(exc).split())} (optimizer {cfg.optim.name})") from exc
        self.forward_model: torch.nn.Module = self.model
        if self.dist and self.info.data_parallel == "ddp":
            self.forward_model = wrap_data_parallel(self.model, self.device)
        self.generator = torch.Generator().manual_seed(t.seed)
        self.state = TrainState(world_size=self.world_size)
        self._lowest_model: Optional[dict[str, Any]] = None  # weights of the lowest-held-out epoch (CPU)
        # resume now, so a checkpoint this run cannot continue is refused before config.yaml
        # and command.txt of the run that wrote it are replaced
        ckpt = self.latest_checkpoint() if t.resume else None
        self.resumed_from: Optional[Path] = ckpt
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        if self.is_main:
            self._write_run_files(command)
        log.info(
            "model %s params=%d pdfs=%d train=%d frames heldout=%d frames device=%s optimizer=%s (%s)%s",
            mcfg, num_parameters(self.model), self.num_pdfs, len(self.train_source), len(self.heldout_source),
            self.device, cfg.optim.name, self.kind.value,
            f" world_size={self.world_size} ({self.dist.backend})" if self.dist else "",
        )  # fmt: skip

    def _write_run_files(self, command: Optional[str]) -> None:
        from omegaconf import OmegaConf

        cmd = command or " ".join(map(shlex.quote, sys.argv))
        if self.dist:
            cmd += f"\n# launched by torchrun: world_size={self.world_size} backend={self.dist.backend}"
        with atomic_output(self.exp / "config.yaml") as tmp:
            tmp.write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        with atomic_output(self.exp / "command.txt") as tmp:
            tmp.write_text(cmd + "\n")

    # ------------------------------------------------------------------ data
    def _load_data(self) -> tuple[FrameSet, FrameSet, int, np.ndarray]:
        from lhotse import CutSet

        from asr_hf.data.paths import ali_info_path, cuts_file

        d = self.cfg.data
        feats = cuts_file(self.root / d.feats_dir, d.train_split)
        ali = cuts_file(self.root / d.ali_dir, d.train_split)
        for p in (feats, ali):
            if not p.is_file():
                raise DataError(str(p), "missing; run the feature / alignment stages first")
        num_pdfs = int(d.num_pdfs)
        if num_pdfs <= 0:
            info = ali_info_path(self.root / d.ali_dir)
            if not info.is_file():
                raise DataError(str(info), "missing; set data.num_pdfs or run the alignment stage")
            num_pdfs = int(json.loads(info.read_text())["num_pdfs"])
        feature_cuts, ali_cuts = CutSet.from_file(feats).to_eager(), CutSet.from_file(ali).to_eager()
        ali_by_id = {c.id: c for c in ali_cuts}
        usable = [c.id for c in feature_cuts if c.id in ali_by_id and ali_by_id[c.id].has_custom("pdf_ali")]
        if len(usable) < len(feature_cuts):
            log.warning("%d utterances without alignment skipped (e.g. failed GMM alignment)",
                        len(feature_cuts) - len(usable))  # fmt: skip
        if not usable:
            raise DataError(str(ali), "no utterance with features and alignment")
        # a speed-perturbed copy goes to the side of its source utterance (Kaldi splits by speaker)
        train_pos, held_pos = heldout_split_indices(len(usable), d.heldout_fraction, seed=self.cfg.trainer.seed,
                                                    groups=[perturbation_source(u) for u in usable])  # fmt: skip
        if self.world_size > 1:  # this rank's contiguous share of the utterances of each set
            if len(train_pos) < self.world_size:
                raise DataError(str(feats), f"{len(train_pos)} training utterances for {self.world_size} processes")
            train_pos = train_pos[slice(*shard_range(len(train_pos), self.world_size, self.rank))]
            held_pos = held_pos[slice(*shard_range(len(held_pos), self.world_size, self.rank))]

        def load(pos: list[int]) -> Utterances:
            if not pos:
                return Utterances([], np.zeros((0, next(iter(feature_cuts)).num_features), np.float32), np.zeros(0, np.int64),
                                  np.zeros(0, np.int64))  # fmt: skip
            ids = {usable[i] for i in pos}
            utts = load_utterances(feature_cuts.filter(lambda c: c.id in ids), ali_cuts)
            if utts.targets.max() >= num_pdfs:
                raise DataError(str(ali), f"pdf id {int(utts.targets.max())} >= num_pdfs {num_pdfs}")
            return utts

        train, held = load(train_pos), load(held_pos)
        store = self._storage_device(train.feats.nbytes + held.feats.nbytes)
        ctx = int(self.cfg.model.context)
        counts = torch.from_numpy(pdf_counts(train.targets, num_pdfs) + pdf_counts(held.targets, num_pdfs))
        counts = self.reducer.all_reduce_(counts).numpy()
        return (
            FrameSet(train, ctx, self.device, store_on=store),
            FrameSet(held, ctx, self.device, store_on=store),
            num_pdfs,
            counts,
        )

    def _storage_device(self, nbytes: int) -> torch.device:
        mode = self.cfg.trainer.features_on_device
        if self.device.type != "cuda" or mode == "no":
            return torch.device("cpu")
        if mode == "yes":
            return self.device
        free, _ = torch.cuda.mem_get_info(self.device)
        fits = nbytes * 3 < free * 0.5  # features + targets + bounds, with room for the model
        log.info("features %.1f GB %s the GPU", nbytes / 1e9, "on" if fits else "streamed to")
        return self.device if fits else torch.device("cpu")

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    # ------------------------------------------------------------ checkpoints
    @property
    def _rank_local_state(self) -> bool:
        """Whether ranks hold different model/optimizer states between syncs (e.g. the
        approximated-Hessian method's local steps), so a checkpoint needs every rank's."""
        return self.world_size > 1 and self.kind == OptimizerKind.MINIBATCH and self.info.data_parallel == "reducer"

    def save_checkpoint(self) -> None:
        """Rank 0 writes the checkpoint (model and optimizer are identical on all ranks,
        except for optimizers with rank-local state, whose per-rank states are gathered)."""
        rank_states = None
        if self._rank_local_state:
            mine = {"model": to_cpu(self.model.state_dict()), "optimizer": to_cpu(self.optimizer.state_dict())}
            rank_states = self.reducer.all_gather_object(mine)
        if not self.is_main:
            return
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rank_states": rank_states,
            **rng_states(self.generator),
            "optimizer_name": self.cfg.optim.name,
            "state": self.state.__dict__,
            "lowest_model": self._lowest_model,
        }
        write_checkpoint(checkpoint_path(self.exp, self.state.epoch), payload, self.cfg.trainer.keep_checkpoints)

    def latest_checkpoint(self) -> Optional[Path]:
        """The newest checkpoint; every rank takes the one rank 0 sees (shared exp dir)."""
        return self.reducer.broadcast_object(newest_checkpoint(self.exp), src=0)

    def load_checkpoint(self, path: Path) -> None:
        """Resume from ``path``.  With the world size it was written with, the run continues
        exactly.  With another world size: HF-family runs continue the same trajectory (their
        samples are drawn over the global frame order, so only the floating-point summation
        order changes); minibatch runs keep parameters and optimizer state but the per-rank
        data order of later epochs changes, so they need ``trainer.allow_world_size_change``;
        optimizers with rank-local state cannot be remapped and refuse."""
        payload, saved_world = read_checkpoint(path, self.device)
        check_checkpoint_matches(path, payload, self.cfg.optim.name, self.model, self.cfg.model)
        if saved_world != self.world_size:
            what = f"checkpoint {path} was written by {saved_world} process(es), this run has {self.world_size}"
            if self.kind == OptimizerKind.SAMPLED:
                log.info("%s: HF samples are global, the trajectory continues unchanged", what)
            elif self.info.data_parallel == "reducer":
                raise ValueError(f"{what}: {self.cfg.optim.name} keeps per-rank state; resume with {saved_world}")
            elif not self.cfg.trainer.allow_world_size_change:
                raise ValueError(
                    f"{what}: the remaining epochs would see a different per-rank data order than an uninterrupted "
                    f"run; resume with {saved_world} processes or set trainer.allow_world_size_change=true"
                )
            else:
                log.warning("%s: continuing with a different per-rank data order", what)
        if payload.get("rank_states") is not None:
            mine = payload["rank_states"][self.rank]
            self.model.load_state_dict(mine["model"])
            self.optimizer.load_state_dict(mine["optimizer"])
        else:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        restore_rng_states(payload, self.generator)
        self.state = TrainState(**payload["state"])
        self._lowest_model = payload.get("lowest_model")
        self.state.world_size = self.world_size
        log.info("resumed from %s (epoch/iteration %d, %.1f s trained)", path, self.state.epoch, self.state.wall_s)
        if self.state.done and self.state.stop_reason == "converged" and not self._converged():
            # a converged run resumed under a tighter trainer.convergence trains on (Kaldi's
            # "continue from the final model with new options"); its history is kept
            log.info("the checkpoint stopped by convergence; under trainer.convergence %s it has not: training on",
                     dict(self.cfg.trainer.convergence))  # fmt: skip
            self.state.done, self.state.stop_reason = False, ""

    # ---------------------------------------------------------------- logging
    def _log(self, row: dict[str, Any]) -> None:
        row = {k: (float(v) if isinstance(v, (np.floating, torch.Tensor)) else v) for k, v in row.items()}
        self.state.history.append(row)
        if self.is_main:
            with open(self.exp / "train_log.jsonl", "a") as f:
                f.write(json_line(row) + "\n")
        log.info(
            "%s %d: heldout loss %.4f acc %.4f, train loss %.4f, %.0f frames/s, wall %.1f s",
            "iter" if self.kind == OptimizerKind.SAMPLED else "epoch", row["index"], row["heldout_loss"],
            row["heldout_acc"], row.get("train_loss", float("nan")), row.get("frames_per_s", 0.0), row["wall_s"],
        )  # fmt: skip

    def _write_reports(self) -> None:
        rows = self.state.history
        write_csv(self.exp / "train_log.csv", rows)
        try:
            plot_curve([r["wall_s"] for r in rows], [r["heldout_loss"] for r in rows], self.exp / "heldout_vs_time.png",
                       xlabel="training wall time (s)", ylabel="held-out cross-entropy", title=self.cfg.optim.name)  # fmt: skip
        except Exception as exc:  # plotting must never fail a training run
            log.warning("could not draw heldout_vs_time.png: %s", exc)

    # --------------------------------------------------------------- training
    def _closure_for(self, x: torch.Tensor, y: torch.Tensor):
        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(self.cfg.trainer.bf16)):
                loss = F.cross_entropy(self.forward_model(x), y)
            loss.backward()
            return loss

        return closure

    def _set_lr_scale(self, scale: float) -> None:
        for g in self.optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
            g["lr"] = g["initial_lr"] * scale

    def _minibatch_epoch(self, time_left: float = math.inf) -> dict[str, Any]:
        """One shuffled pass; stops early (``cut`` in the result) once ``time_left`` seconds
        of training time are spent, so a time budget binds even when epochs are long."""
        t = self.cfg.trainer
        total, n_frames, n_batches = 0.0, 0, 0
        start = self.clock()
        cut = False
        if self.world_size == 1:
            batch_size, generator = t.batch_size, self.generator
            n_total = max(1, len(self.train_set) // batch_size)
        else:
            # each rank draws batch_size / world_size frames of its own shard per step (the global
            # minibatch keeps the configured size); the shuffle is a function of (seed, rank, epoch)
            # so a resumed run needs no per-rank RNG state; all ranks take the same number of steps
            batch_size = max(1, t.batch_size // self.world_size)
            generator = torch.Generator().manual_seed(
                t.seed * 1_000_003 + 7919 * self.rank + 104_729 * (self.state.epoch + 1)
            )
            local_steps = torch.tensor([len(self.train_set) // batch_size], dtype=torch.int64)
            n_total = int(self.reducer.all_gather(local_steps).min())
            if n_total < 1:
                raise DataError(str(self.exp), f"a rank's shard has fewer than {batch_size} frames")
        batches = self.train_set.minibatches(batch_size, generator)
        if self.world_size > 1:
            batches = itertools.islice(batches, n_total)
        for x, y in tqdm(batches, total=n_total, desc=f"epoch {self.state.epoch + 1}", leave=False,
                         disable=not (self.is_main and sys.stderr.isatty())):
            loss = self.optimizer.step(self._closure_for(x, y))
            n_batches += 1
            value, what = self._finite_step(loss)
            if what:
                raise NonFiniteStep(what, n_batches)
            total += value * y.numel()
            n_frames += y.numel()
            if math.isfinite(time_left) and n_batches % 8 == 0 and self._out_of_time(start, time_left):
                cut = True
                break
        if self.world_size > 1:
            total, n_frames = self.reducer.all_reduce_(torch.tensor([total, n_frames], dtype=torch.float64)).tolist()
        return {"train_loss": total / max(n_frames, 1), "frames": int(n_frames), "cut": cut}

    def _finite_step(self, loss: torch.Tensor) -> tuple[float, Optional[str]]:
        """The minibatch loss, and what of (loss, gradient, updated parameters) is not
        finite (``None``: all are).  One host sync per step (the loss read needs one
        anyway); the norms overflow only for values beyond 1e19, which diverged already.
        Data-parallel ranks agree through one all-reduce of the three flags."""
        params = [p for p in self.model.parameters()]
        grads = [p.grad.detach() for p in params if p.grad is not None]
        zero = torch.zeros((), device=params[0].device)
        sums = [
            loss.detach().float().reshape(()),
            torch.stack(torch._foreach_norm(grads)).float().sum() if grads else zero,
            torch.stack(torch._foreach_norm([p.detach() for p in params])).float().sum(),
        ]
        values = torch.stack(sums).tolist()
        flags = [0.0 if math.isfinite(v) else 1.0 for v in values]
        if self.world_size > 1:
            flags = self.reducer.all_reduce_(torch.tensor(flags, dtype=torch.float64)).tolist()
        what = next((w for w, f in zip(("loss", "gradient", "parameters"), flags) if f), None)
        return values[0], what

    def _out_of_time(self, start: float, time_left: float) -> bool:
        """Whether ``time_left`` seconds have passed since ``start`` (rank 0's clock decides
        for every rank, so data-parallel ranks stop after the same step)."""
        self._sync()
        flag = torch.tensor([float(self.clock() - start >= time_left)])
        if self.world_size > 1:
            self.reducer.broadcast_(flag)
        return bool(flag.item())

    def _rewrite_log(self) -> None:
        """Make ``train_log.jsonl`` the checkpoint's history (the truth): rows a run wrote
        after its last checkpoint (it stopped between logging an epoch and saving it) go."""
        path = self.exp / "train_log.jsonl"
        old = path.read_text().splitlines() if path.is_file() else []
        lines = [json_line(r) for r in self.state.history]
        if old != lines:
            log.warning("%s: %d row(s) -> the %d of checkpoint %s (iteration %d)", path, len(old), len(lines),
                        self.resumed_from, self.state.epoch)  # fmt: skip
        with atomic_output(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in lines))

    def train(self) -> dict[str, Any]:
        t = self.cfg.trainer
        if self.is_main and self.resumed_from is not None:
            self._rewrite_log()
        elif self.is_main and (self.exp / "train_log.jsonl").exists():
            (self.exp / "train_log.jsonl").unlink()
        use_newbob = self._uses_newbob
        if self.state.epoch == 0 and not self.state.history:
            loss, acc = self._evaluate()
            self.state.best_heldout, self.state.best_heldout_acc = loss, acc
            self._log({"index": 0, "wall_s": 0.0, "heldout_loss": loss, "heldout_acc": acc})
        limit = t.max_iters if self.kind == OptimizerKind.SAMPLED else t.max_epochs
        if use_newbob:
            self._set_lr_scale(self.state.lr_scale)
        while not self.state.done and self.state.epoch < limit:
            if t.time_budget_s and self.state.wall_s >= t.time_budget_s:
                log.info("time budget %.0f s reached", t.time_budget_s)
                self.state.stop_reason = "time_budget"
                break
            self._sync()
            start = self.clock()
            comm0 = getattr(self.reducer, "comm_seconds", 0.0)
            if self.kind == OptimizerKind.SAMPLED:
                data = SampledData(self._source(self.train_source), self._source(self.heldout_source))
                stats = dict(self.optimizer.step(data) or {})
                self._count_nonfinite_iteration(stats)
                frames = int(stats.get("grad_samples", 0)) + int(stats.get("curv_samples", 0))
                row_extra: dict[str, Any] = {f"opt_{k}": v for k, v in stats.items() if _is_number(v)}
            else:
                # the epoch's start: newbob's rollback point, and the divergence guard's
                snapshot = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()))
                time_left = t.time_budget_s - self.state.wall_s if t.time_budget_s else math.inf
                try:
                    ep = self._minibatch_epoch(time_left)
                except NonFiniteStep as bad:
                    self._sync()
                    self.state.wall_s += self.clock() - start  # the failed attempt's time was spent
                    self._retry_after_nonfinite(bad, snapshot)
                    continue
                self.state.nonfinite_failures = 0
                if ep["cut"]:
                    log.info("time budget %.0f s reached within epoch %d", t.time_budget_s, self.state.epoch + 1)
                    self.state.done, self.state.stop_reason = True, "time_budget"
                frames = ep["frames"]
                row_extra = {"train_loss": ep["train_loss"], "lr_scale": self.state.lr_scale}
                stats_fn = getattr(self.optimizer, "last_stats", None)
                if callable(stats_fn):
                    row_extra.update({f"opt_{k}": v for k, v in (stats_fn() or {}).items() if _is_number(v)})
            self._sync()
            elapsed = self.clock() - start
            if self.dist:  # seconds inside collectives (DDP's own gradient all-reduce is not counted)
                comm = getattr(self.reducer, "comm_seconds", 0.0) - comm0
                row_extra.update({"world_size": self.world_size, "comm_s": comm, "comm_share": comm / max(elapsed, 1e-9)})
            self.state.wall_s += elapsed
            self.state.frames_seen += frames
            self.state.epoch += 1
            loss, acc = self._evaluate()
            if use_newbob:
                loss, acc = self._newbob(loss, acc, snapshot)
            elif self._keeps_lowest and loss < self.state.lowest_heldout:
                self.state.lowest_heldout, self.state.lowest_epoch = loss, self.state.epoch
                self._lowest_model = to_cpu(self.model.state_dict())
            self._log({"index": self.state.epoch, "wall_s": self.state.wall_s, "heldout_loss": loss,
                       "heldout_acc": acc, "frames_per_s": frames / max(elapsed, 1e-9), "epoch_s": elapsed,
                       **row_extra})  # fmt: skip
            if not use_newbob and not self.state.done and self._converged():
                self.state.done, self.state.stop_reason = True, "converged"
            self.save_checkpoint()
        if not self.state.stop_reason and self.state.epoch >= limit:
            self.state.stop_reason = "max_iters" if self.kind == OptimizerKind.SAMPLED else "max_epochs"
        return self.finish()

    def _source(self, source: ShardedSource) -> Any:
        """What a SAMPLED optimizer draws from: normalised inputs when it has the bare net."""
        return NormalizedSource(source, self.model.norm) if self.info.bare_net else source

    def _lr(self) -> float:
        groups = getattr(self.optimizer, "param_groups", None) or [{}]
        return float(groups[0].get("lr", float("nan")))

    def _retry_after_nonfinite(self, bad: NonFiniteStep, snapshot) -> None:
        """Roll a minibatch epoch that met a non-finite step back to its start and halve
        the learning rate; ``trainer.max_nonfinite`` such epochs in a row stop training."""
        self.model.load_state_dict(snapshot[0])
        self.optimizer.load_state_dict(snapshot[1])
        self.state.nonfinite_failures += 1
        n, lr = self.state.nonfinite_failures, self._lr()
        epoch = self.state.epoch + 1
        if n >= self.cfg.trainer.max_nonfinite:
            raise DataError(
                str(self.exp),
                f"training diverged with {self.cfg.optim.name}: non-finite {bad.what} at epoch {epoch} step {bad.step} "
                f"on {n} consecutive attempt{'s' if n > 1 else ''} (learning rate halved {n - 1} times, to {lr:g}); "
                "lower optim.options.lr or raise trainer.max_nonfinite",
            )
        self.state.lr_scale *= 0.5
        self._set_lr_scale(self.state.lr_scale)
        log.warning("epoch %d: non-finite %s at step %d; rolled back to the epoch's start, lr %g -> %g",
                    epoch, bad.what, bad.step, lr, self._lr())  # fmt: skip

    def _count_nonfinite_iteration(self, stats: dict[str, Any]) -> None:
        """HF iterations reject non-finite steps themselves; ``trainer.max_nonfinite`` in a
        row (e.g. non-finite features in every gradient sample) stop training."""
        code = float(stats.get("nonfinite", 0.0) or 0.0)
        if not code:
            self.state.nonfinite_failures = 0
            return
        self.state.nonfinite_failures += 1
        n = self.state.nonfinite_failures
        if n >= self.cfg.trainer.max_nonfinite:
            what = next((k for k, v in NONFINITE_CODES.items() if v == code), "value")
            raise DataError(
                str(self.exp),
                f"training diverged with {self.cfg.optim.name}: non-finite {what} at iteration {self.state.epoch + 1} "
                f"on {n} consecutive iteration{'s' if n > 1 else ''} (steps rejected, damping raised to "
                f"{float(stats.get('next_lambda', float('nan'))):g})",
            )

    def _newbob(self, loss: float, acc: float, snapshot) -> tuple[float, float]:
        """:func:`~asr_hf.nnet.schedule.newbob` on this epoch; a rejected epoch is rolled
        back to ``snapshot`` (model and optimizer state dicts) and evaluated again."""

        def rollback() -> tuple[float, float]:
            self.model.load_state_dict(snapshot[0])
            self.optimizer.load_state_dict(snapshot[1])
            return self._evaluate()

        return newbob(self.state, self.cfg.trainer.newbob, loss, acc, rollback if snapshot is not None else None,
                      self._set_lr_scale)  # fmt: skip

    def _converged(self) -> bool:
        """:func:`~asr_hf.nnet.schedule.converged` on this run's held-out history."""
        return converged(self.state.history, self.cfg.trainer.convergence)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _evaluate(self) -> tuple[float, float]:
        with self._consensus():
            return evaluate(self.model, self.heldout_set, self.cfg.trainer.eval_chunk, self.reducer)

    @contextlib.contextmanager
    def _consensus(self) -> Iterator[None]:
        """Inside: the model holds the mean of the ranks' parameters (restored on exit).

        Optimizers with rank-local state (local SGD rounds) leave the ranks at different
        points between syncs; held-out metrics and the final model are those of the average,
        the point the next sync starts from.  A no-op for every other optimizer.
        """
        if not self._rank_local_state:
            yield
            return
        saved = [p.detach().clone() for p in self.model.parameters()]
        with torch.no_grad():
            for p in self.model.parameters():
                self.reducer.all_reduce_(p.data).div_(self.world_size)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.model.parameters(), saved):
                    p.copy_(v)

    @property
    def _uses_newbob(self) -> bool:
        return self.kind == OptimizerKind.MINIBATCH and self.cfg.trainer.newbob.enabled and self.info.newbob

    @property
    def _keeps_lowest(self) -> bool:
        """final.pt from the lowest-held-out epoch: minibatch runs without newbob."""
        return self.kind == OptimizerKind.MINIBATCH and not self._uses_newbob and self.cfg.trainer.keep_lowest_heldout

    def finish(self) -> dict[str, Any]:
        last = self.state.history[-1]
        final_epoch = self.state.epoch
        if self._keeps_lowest and self._lowest_model is not None and self.state.lowest_epoch != self.state.epoch:
            log.info("final.pt: epoch %d's weights (lowest held-out loss %.4f; the last epoch, %d, had %.4f)",
                     self.state.lowest_epoch, self.state.lowest_heldout, self.state.epoch, last["heldout_loss"])  # fmt: skip
            self.model.load_state_dict(self._lowest_model)
            final_epoch = self.state.lowest_epoch
            last = next(r for r in self.state.history if r["index"] == final_epoch)
        summary = {
            "system": self.exp.name,
            "optimizer": self.cfg.optim.name,
            "optimizer_kind": self.kind.value,
            "train_wall_s": round(self.state.wall_s, 3),
            "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
            "world_size": self.world_size,
            "num_params": num_parameters(self.model),
            "epochs_or_iters": self.state.epoch,
            "final_model_epoch": final_epoch,  # the epoch / iteration whose weights final.pt holds
            "stop_reason": self.state.stop_reason,
            "frames_seen": self.state.frames_seen,
            "heldout_loss": last["heldout_loss"],
            "heldout_acc": last["heldout_acc"],
            "train_frames": len(self.train_source),
        }
        if self.dist:
            summary["comm_s"] = round(sum(r.get("comm_s", 0.0) for r in self.state.history), 3)
        summary = finite_or_none(summary)
        with self._consensus():
            # every rank checks (the same weights), so none waits at the barrier for a rank 0 that refused
            bad = [n for n, v in self.model.state_dict().items() if v.is_floating_point() and not bool(v.isfinite().all())]
            if bad:
                raise DataError(str(self.exp / "final.pt"), f"not written: non-finite weights in {', '.join(bad)}")
            if self.is_main:
                self._write_outputs(summary)
        self.reducer.barrier()  # no rank leaves before rank 0 has written the outputs
        return summary

    def close(self) -> None:
        """Leave the process group of a torchrun job (a no-op in one process)."""
        if self.dist is not None:
            shutdown()

    def _write_outputs(self, summary: dict[str, Any]) -> None:
        final = self.exp / "final.pt"
        with atomic_output(final) as tmp:
            torch.save(
                {"model": self.model.state_dict(), "feat_dim": self.model.feat_dim, "num_pdfs": self.num_pdfs,
                 "model_cfg": self.model.cfg.__dict__, "log_priors": log_priors(self.counts)},
                tmp,
            )  # fmt: skip
        with atomic_output(self.exp / "train_summary.json") as tmp:
            tmp.write_text(json.dumps(finite_or_none(summary), indent=1, allow_nan=False))
        self._write_reports()


class NormalizedSource:
    """An ExampleSource yielding ``norm(inputs)`` of another source (for SAMPLED optimizers)."""

    def __init__(self, source: FrameSet, norm: torch.nn.Module) -> None:
        self.source = source
        self.norm = norm

    def __len__(self) -> int:
        return len(self.source)

    @torch.no_grad()
    def batches(self, indices: torch.Tensor, chunk_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.source.batches(indices, chunk_size):
            yield self.norm(x), y


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)
