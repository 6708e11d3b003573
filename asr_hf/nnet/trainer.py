"""Cross-entropy training of the hybrid DNN with any registered optimizer.

One trainer drives both optimizer kinds of :mod:`asr_hf.optim.base`:

* MINIBATCH (SGD, Adam, KFAC, K-BFGS...): shuffled epochs of minibatches,
  ``opt.step(closure)``; SGD follows Kaldi nnet1's newbob schedule on held-out
  frame accuracy (halve the learning rate once an epoch gains less than
  ``start_halving_inc`` points, stop below ``end_halving_inc``; an epoch that
  does not improve is rolled back), or on cross-entropy with ``criterion=loss``.
* SAMPLED (Hessian-free family): ``opt.step(SampledData(train, heldout))`` per
  HF iteration; the optimizer draws its own gradient / curvature samples.

Every epoch / HF iteration ends with a checkpoint holding model, optimizer,
sampler RNG, schedule and clock; ``resume`` continues a killed run to the same
result as an uninterrupted one.  The exp dir gets ``config.yaml``,
``command.txt``, ``train_log.jsonl`` / ``train_log.csv``, ``final.pt``,
``train_summary.json`` and ``heldout_vs_time.png``.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import itertools
import json
import logging
import math
import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from asr_hf.nnet.data import FrameSet, Utterances, heldout_split_indices, input_stats, load_utterances, log_priors, pdf_counts
from asr_hf.nnet.model import DNN, DNNConfig, num_parameters
from asr_hf.optim.base import LocalReducer, LossKind, OptimizerKind, SampledData
from asr_hf.optim.distributed import DistReducer, ShardedSource, init_from_env, shard_range
from asr_hf.optim.registry import build_optimizer, optimizer_info
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import atomic_output

log = logging.getLogger(__name__)

#: optimizers whose update only needs the gradient, so bfloat16 autocast is safe
BF16_OPTIMIZERS = frozenset({"sgd", "adam", "adamw", "rmsprop", "ahsgd", "soap", "shampoo", "psgd"})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    done: bool = False
    stop_reason: str = ""  # converged | newbob | time_budget | max_iters / max_epochs
    world_size: int = 1  # processes of the run that wrote the state
    history: list[dict[str, Any]] = field(default_factory=list)


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
        self.exp.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            (self.exp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            cmd = command or " ".join(map(shlex.quote, sys.argv))
            if self.dist:
                cmd += f"\n# launched by torchrun: world_size={self.world_size} backend={self.dist.backend}"
            (self.exp / "command.txt").write_text(cmd + "\n")
        if t.newbob.criterion not in ("accuracy", "loss"):
            raise ValueError(f"trainer.newbob.criterion must be accuracy or loss, got {t.newbob.criterion!r}")
        if t.bf16 and cfg.optim.name not in BF16_OPTIMIZERS:
            raise ValueError(
                f"trainer.bf16 autocast is supported for {sorted(BF16_OPTIMIZERS)}, not {cfg.optim.name!r}: "
                "curvature statistics and CG need float32 (use trainer.tf32 on a GPU)"
            )
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
        options = OmegaConf.to_container(cfg.optim.options, resolve=True) or {}
        if self.dist and self.info.data_parallel == "reducer":
            options["reducer"] = self.reducer
        # SAMPLED (HF) optimizers get the bare nn.Sequential (their fastest curvature path) and
        # sources that apply the model's fixed input normalisation; the parameters are the same.
        target = self.model.net if self.kind == OptimizerKind.SAMPLED else self.model
        self.optimizer = build_optimizer(cfg.optim.name, target, LossKind.CROSS_ENTROPY, **options)
        self.forward_model: torch.nn.Module = self.model
        if self.dist and self.info.data_parallel == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None, broadcast_buffers=False
            )
        self.generator = torch.Generator().manual_seed(t.seed)
        self.state = TrainState(world_size=self.world_size)
        log.info(
            "model %s params=%d pdfs=%d train=%d frames heldout=%d frames device=%s optimizer=%s (%s)%s",
            mcfg, num_parameters(self.model), self.num_pdfs, len(self.train_source), len(self.heldout_source),
            self.device, cfg.optim.name, self.kind.value,
            f" world_size={self.world_size} ({self.dist.backend})" if self.dist else "",
        )  # fmt: skip

    # ------------------------------------------------------------------ data
    def _load_data(self) -> tuple[FrameSet, FrameSet, int, np.ndarray]:
        from lhotse import CutSet

        d = self.cfg.data
        feats = self.root / d.feats_dir / f"cuts_{d.train_split}.jsonl.gz"
        ali = self.root / d.ali_dir / f"cuts_{d.train_split}.jsonl.gz"
        for p in (feats, ali):
            if not p.is_file():
                raise DataError(str(p), "missing; run the feature / alignment stages first")
        num_pdfs = int(d.num_pdfs)
        if num_pdfs <= 0:
            info = self.root / d.ali_dir / "info.json"
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
        train_pos, held_pos = heldout_split_indices(len(usable), d.heldout_fraction, seed=self.cfg.trainer.seed)
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
    def _ckpt_path(self, n: int) -> Path:
        return self.exp / "checkpoints" / f"ckpt-{n:04d}.pt"

    @property
    def _rank_local_state(self) -> bool:
        """Whether ranks hold different model/optimizer states between syncs (e.g. the
        approximated-Hessian method's local steps), so a checkpoint needs every rank's."""
        return self.world_size > 1 and self.kind == OptimizerKind.MINIBATCH and self.info.data_parallel == "reducer"

    def save_checkpoint(self) -> None:
        """Rank 0 writes the checkpoint (model and optimizer are identical on all ranks,
        except for optimizers with rank-local state, whose per-rank states are gathered)."""
        n = self.state.epoch
        rank_states = None
        if self._rank_local_state:
            import torch.distributed as dist

            mine = {"model": _to_cpu(self.model.state_dict()), "optimizer": _to_cpu(self.optimizer.state_dict())}
            rank_states = [None] * self.world_size
            dist.all_gather_object(rank_states, mine)
        if not self.is_main:
            return
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rank_states": rank_states,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "state": self.state.__dict__,
        }
        path = self._ckpt_path(n)
        with atomic_output(path) as tmp:
            torch.save(payload, tmp)
        old = sorted((self.exp / "checkpoints").glob("ckpt-*.pt"))[: -max(1, self.cfg.trainer.keep_checkpoints)]
        for p in old:
            p.unlink(missing_ok=True)

    def latest_checkpoint(self) -> Optional[Path]:
        ckpts = sorted((self.exp / "checkpoints").glob("ckpt-*.pt"))
        found = ckpts[-1] if ckpts else None
        if self.dist:  # every rank resumes from the checkpoint rank 0 sees (shared exp dir)
            import torch.distributed as dist

            box = [found]
            dist.broadcast_object_list(box, src=0)
            found = box[0]
        return found

    def load_checkpoint(self, path: Path) -> None:
        """Resume from ``path``.  With the world size it was written with, the run continues
        exactly.  With another world size: HF-family runs continue the same trajectory (their
        samples are drawn over the global frame order, so only the floating-point summation
        order changes); minibatch runs keep parameters and optimizer state but the per-rank
        data order of later epochs changes, so they need ``trainer.allow_world_size_change``;
        optimizers with rank-local state cannot be remapped and refuse."""
        payload = torch.load(path, map_location=self.device, weights_only=False)
        saved_world = int(payload["state"].get("world_size", 1))
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
        self.generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        if payload["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        np.random.set_state(payload["numpy_rng"])
        random.setstate(payload["python_rng"])
        self.state = TrainState(**payload["state"])
        self.state.world_size = self.world_size
        log.info("resumed from %s (epoch/iteration %d, %.1f s trained)", path, self.state.epoch, self.state.wall_s)

    # ---------------------------------------------------------------- logging
    def _log(self, row: dict[str, Any]) -> None:
        row = {k: (float(v) if isinstance(v, (np.floating, torch.Tensor)) else v) for k, v in row.items()}
        self.state.history.append(row)
        if self.is_main:
            with open(self.exp / "train_log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        log.info(
            "%s %d: heldout loss %.4f acc %.4f, train loss %.4f, %.0f frames/s, wall %.1f s",
            "iter" if self.kind == OptimizerKind.SAMPLED else "epoch", row["index"], row["heldout_loss"],
            row["heldout_acc"], row.get("train_loss", float("nan")), row.get("frames_per_s", 0.0), row["wall_s"],
        )  # fmt: skip

    def _write_reports(self) -> None:
        rows = self.state.history
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        with atomic_output(self.exp / "train_log.csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5, 3.5))
            ax.plot([r["wall_s"] for r in rows], [r["heldout_loss"] for r in rows], marker="o")
            ax.set_xlabel("training wall time (s)")
            ax.set_ylabel("held-out cross-entropy")
            ax.set_title(self.cfg.optim.name)
            fig.tight_layout()
            with atomic_output(self.exp / "heldout_vs_time.png") as tmp:
                fig.savefig(tmp, format="png")
            plt.close(fig)
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
        n_frames, n_batches = 0, 0
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # summed on the device: no per-batch sync
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
            loss_sum += loss.detach().double() * y.numel()
            n_frames += y.numel()
            n_batches += 1
            if math.isfinite(time_left) and n_batches % 8 == 0 and self._out_of_time(start, time_left):
                cut = True
                break
        total = float(loss_sum)
        if self.world_size > 1:
            total, n_frames = self.reducer.all_reduce_(torch.tensor([total, n_frames], dtype=torch.float64)).tolist()
        return {"train_loss": total / max(n_frames, 1), "frames": int(n_frames), "cut": cut}

    def _out_of_time(self, start: float, time_left: float) -> bool:
        """Whether ``time_left`` seconds have passed since ``start`` (rank 0's clock decides
        for every rank, so data-parallel ranks stop after the same step)."""
        self._sync()
        flag = torch.tensor([float(self.clock() - start >= time_left)])
        if self.world_size > 1:
            self.reducer.broadcast_(flag)
        return bool(flag.item())

    def train(self) -> dict[str, Any]:
        t = self.cfg.trainer
        ckpt = self.latest_checkpoint() if t.resume else None
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        elif self.is_main and (self.exp / "train_log.jsonl").exists():
            (self.exp / "train_log.jsonl").unlink()
        use_newbob = (
            self.kind == OptimizerKind.MINIBATCH and t.newbob.enabled and self.cfg.optim.name == "sgd"
        )
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
                data = SampledData(NormalizedSource(self.train_source, self.model.norm),
                                   NormalizedSource(self.heldout_source, self.model.norm))
                stats = dict(self.optimizer.step(data) or {})
                frames = int(stats.get("grad_samples", 0)) + int(stats.get("curv_samples", 0))
                row_extra: dict[str, Any] = {f"opt_{k}": v for k, v in stats.items() if _is_number(v)}
            else:
                snapshot = None
                if use_newbob:
                    snapshot = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()))
                time_left = t.time_budget_s - self.state.wall_s if t.time_budget_s else math.inf
                ep = self._minibatch_epoch(time_left)
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
            self._log({"index": self.state.epoch, "wall_s": self.state.wall_s, "heldout_loss": loss,
                       "heldout_acc": acc, "frames_per_s": frames / max(elapsed, 1e-9), "epoch_s": elapsed,
                       **row_extra})  # fmt: skip
            if not use_newbob and not self.state.done and self._converged():
                self.state.done, self.state.stop_reason = True, "converged"
            self.save_checkpoint()
        if not self.state.stop_reason and self.state.epoch >= limit:
            self.state.stop_reason = "max_iters" if self.kind == OptimizerKind.SAMPLED else "max_epochs"
        return self.finish()

    def _newbob(self, loss: float, acc: float, snapshot) -> tuple[float, float]:
        """Kaldi nnet1's schedule on the held-out set.  ``criterion=accuracy`` (nnet1 as
        used in the papers' era): an epoch must raise frame accuracy or it is rolled back;
        halving starts once the gain is below ``start_halving_inc`` points and training
        stops once halving and below ``end_halving_inc``.  ``criterion=loss`` (later
        nnet1): the same on cross-entropy with relative thresholds ``*_halving_impr``."""
        nb = self.cfg.trainer.newbob
        by_acc = nb.criterion == "accuracy"
        prev_loss, prev_acc = self.state.best_heldout, self.state.best_heldout_acc
        worse = acc <= prev_acc if by_acc else loss >= prev_loss
        if worse and snapshot is not None:
            what = f"accuracy {100 * acc:.2f}% <= {100 * prev_acc:.2f}%" if by_acc else f"loss {loss:.4f} >= {prev_loss:.4f}"
            log.info("epoch rejected: held-out %s; rolling back, halving lr", what)
            self.model.load_state_dict(snapshot[0])
            self.optimizer.load_state_dict(snapshot[1])
            loss, acc = self._evaluate()
            self.state.halving = True
            self.state.lr_scale *= nb.halving_factor
            self._set_lr_scale(self.state.lr_scale)
            return loss, acc
        if by_acc:
            impr, start_thr, end_thr, unit = 100 * (acc - prev_acc), nb.start_halving_inc, nb.end_halving_inc, "points"
        else:
            impr = (prev_loss - loss) / max(abs(prev_loss), 1e-12)
            start_thr, end_thr, unit = nb.start_halving_impr, nb.end_halving_impr, "relative"
        self.state.best_heldout, self.state.best_heldout_acc = loss, acc
        if self.state.halving and impr < end_thr and self.state.epoch >= nb.min_epochs:
            log.info("newbob: improvement %.4f (%s) < %.4f, stopping", impr, unit, end_thr)
            self.state.done, self.state.stop_reason = True, "newbob"
        if impr < start_thr:
            self.state.halving = True
        if self.state.halving:
            self.state.lr_scale *= nb.halving_factor
            self._set_lr_scale(self.state.lr_scale)
        return loss, acc

    def _converged(self) -> bool:
        """The stopping rule of every optimizer not on newbob (``trainer.convergence``): the
        held-out cross-entropy improved by less than ``rel_tol`` over the last ``window``
        HF iterations or epochs."""
        conv = self.cfg.trainer.convergence
        rows = self.state.history
        if not conv.enabled or len(rows) <= conv.window:
            return False
        before, now = float(rows[-1 - conv.window]["heldout_loss"]), float(rows[-1]["heldout_loss"])
        gain = (before - now) / max(abs(before), 1e-12)
        if gain < conv.rel_tol:
            log.info("converged: held-out CE %.5f -> %.5f over %d iterations (%.2e relative < %g)",
                     before, now, conv.window, gain, conv.rel_tol)  # fmt: skip
            return True
        return False

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

    def finish(self) -> dict[str, Any]:
        last = self.state.history[-1]
        summary = {
            "system": self.exp.name,
            "optimizer": self.cfg.optim.name,
            "optimizer_kind": self.kind.value,
            "train_wall_s": round(self.state.wall_s, 3),
            "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
            "world_size": self.world_size,
            "num_params": num_parameters(self.model),
            "epochs_or_iters": self.state.epoch,
            "stop_reason": self.state.stop_reason,
            "frames_seen": self.state.frames_seen,
            "heldout_loss": last["heldout_loss"],
            "heldout_acc": last["heldout_acc"],
            "train_frames": len(self.train_source),
        }
        if self.dist:
            summary["comm_s"] = round(sum(r.get("comm_s", 0.0) for r in self.state.history), 3)
        with self._consensus():
            if self.is_main:
                self._write_outputs(summary)
        if self.dist:
            import torch.distributed as dist

            dist.barrier()  # no rank leaves before rank 0 has written the outputs
        return summary

    def _write_outputs(self, summary: dict[str, Any]) -> None:
        final = self.exp / "final.pt"
        with atomic_output(final) as tmp:
            torch.save(
                {"model": self.model.state_dict(), "feat_dim": self.model.feat_dim, "num_pdfs": self.num_pdfs,
                 "model_cfg": self.model.cfg.__dict__, "log_priors": log_priors(self.counts)},
                tmp,
            )  # fmt: skip
        with atomic_output(self.exp / "train_summary.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=1))
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


def _to_cpu(obj: Any) -> Any:
    """A (nested) state dict with every tensor copied to the CPU (for gathering across ranks)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[DNN, np.ndarray]:
    """Load ``final.pt``: the model (eval mode) and its log-priors."""
    payload = torch.load(path, map_location=device, weights_only=False)
    model = DNN(payload["feat_dim"], payload["num_pdfs"], DNNConfig(**payload["model_cfg"])).to(device)
    model.load_state_dict(payload["model"])
    model.eval()
    return model, np.asarray(payload["log_priors"])


@torch.no_grad()
def pseudo_loglikes(
    model: DNN, feature_cuts, log_prior: np.ndarray, prior_scale: float = 1.0,
    device: torch.device | str = "cpu", chunk: int = 8192,
) -> Iterator[tuple[str, np.ndarray]]:
    """Per utterance ``log p(s|x) - prior_scale * log p(s)``, shape ``(T, num_pdfs)``.

    This is the matrix the hybrid decoder consumes (it applies the acoustic weight).
    """
    from asr_hf.nnet.data import Utterances

    pri = torch.as_tensor(log_prior, dtype=torch.float32, device=device)
    for cut in feature_cuts:
        f = np.asarray(cut.load_features(), dtype=np.float32)
        utt = Utterances([cut.id], f, np.full(f.shape[0], -1, np.int64), np.asarray([f.shape[0]]))
        fs = FrameSet(utt, model.cfg.context, device)
        out = []
        for x, _ in fs.batches(torch.arange(len(fs)), chunk):
            out.append(torch.log_softmax(model(x), dim=-1) - prior_scale * pri)
        yield cut.id, torch.cat(out).cpu().numpy()
