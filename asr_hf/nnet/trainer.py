"""Cross-entropy training of the hybrid DNN with any registered optimizer.

One trainer drives both optimizer kinds of :mod:`asr_hf.optim.base`:

* MINIBATCH (SGD, Adam, KFAC, K-BFGS...): shuffled epochs of minibatches,
  ``opt.step(closure)``; SGD-style optimizers follow Kaldi nnet1's newbob
  schedule (halve the learning rate once held-out cross-entropy improves by
  less than ``start_halving_impr``, stop below ``end_halving_impr``; an epoch
  that makes held-out loss worse is rolled back).
* SAMPLED (Hessian-free family): ``opt.step(SampledData(train, heldout))`` per
  HF iteration; the optimizer draws its own gradient / curvature samples.

Every epoch / HF iteration ends with a checkpoint holding model, optimizer,
sampler RNG, schedule and clock; ``resume`` continues a killed run to the same
result as an uninterrupted one.  The exp dir gets ``config.yaml``,
``command.txt``, ``train_log.jsonl`` / ``train_log.csv``, ``final.pt``,
``train_summary.json`` and ``heldout_vs_time.png``.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from asr_hf.nnet.data import FrameSet, load_utterances, log_priors, pdf_counts, split_heldout
from asr_hf.nnet.model import DNN, DNNConfig, num_parameters
from asr_hf.optim.base import LossKind, OptimizerKind, SampledData
from asr_hf.optim.registry import build_optimizer, optimizer_kind
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import atomic_output

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: torch.nn.Module, frames: FrameSet, chunk: int = 8192) -> tuple[float, float]:
    """Mean cross-entropy and frame accuracy over every labelled frame of ``frames``."""
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
    return total_loss / max(count, 1), correct / max(count, 1)


@dataclass
class TrainState:
    """Everything besides model/optimizer that an exact resume needs."""

    epoch: int = 0  # completed epochs (MINIBATCH) or HF iterations (SAMPLED)
    wall_s: float = 0.0  # training wall time so far, summed over resumed runs
    frames_seen: int = 0
    lr_scale: float = 1.0
    halving: bool = False
    best_heldout: float = float("inf")
    done: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Build data, model and optimizer from a composed config and train.

    Args:
        cfg: an OmegaConf config following :class:`asr_hf.nnet.config.TrainConfig`.
        root: directory the config's relative paths are taken from (the recipe dir).
        command: the command line to record in the exp dir.
    """

    def __init__(self, cfg, root: Path | str = ".", command: Optional[str] = None) -> None:
        from omegaconf import OmegaConf

        from asr_hf.nnet.config import exp_dir_for

        self.cfg = cfg
        self.root = Path(root)
        self.exp = self.root / exp_dir_for(cfg)
        self.exp.mkdir(parents=True, exist_ok=True)
        (self.exp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (self.exp / "command.txt").write_text((command or " ".join(map(shlex.quote, sys.argv))) + "\n")
        t = cfg.trainer
        self.device = resolve_device(t.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = bool(t.tf32)
            torch.backends.cudnn.allow_tf32 = bool(t.tf32)
        self._seed_everything(t.seed)
        self.train_set, self.heldout_set, self.num_pdfs, self.counts = self._load_data()
        mcfg = DNNConfig(**{k: cfg.model[k] for k in ("context", "hidden_dim", "num_layers", "activation")})
        self.model = DNN(self.train_set.feat_dim, self.num_pdfs, mcfg).to(self.device)
        mean, inv_std = self.train_set.input_stats(seed=t.seed)
        self.model.norm.mean.copy_(mean.to(self.device))
        self.model.norm.inv_std.copy_(inv_std.to(self.device))
        self.kind = optimizer_kind(cfg.optim.name)
        options = OmegaConf.to_container(cfg.optim.options, resolve=True) or {}
        # SAMPLED (HF) optimizers get the bare nn.Sequential (their fastest curvature path) and
        # sources that apply the model's fixed input normalisation; the parameters are the same.
        target = self.model.net if self.kind == OptimizerKind.SAMPLED else self.model
        self.optimizer = build_optimizer(cfg.optim.name, target, LossKind.CROSS_ENTROPY, **options)
        self.generator = torch.Generator().manual_seed(t.seed)
        self.state = TrainState()
        log.info(
            "model %s params=%d pdfs=%d train=%d frames heldout=%d frames device=%s optimizer=%s (%s)",
            mcfg, num_parameters(self.model), self.num_pdfs, len(self.train_set), len(self.heldout_set),
            self.device, cfg.optim.name, self.kind.value,
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
        utts = load_utterances(CutSet.from_file(feats), CutSet.from_file(ali))
        if utts.targets.max() >= num_pdfs:
            raise DataError(str(ali), f"pdf id {int(utts.targets.max())} >= num_pdfs {num_pdfs}")
        train, held = split_heldout(utts, d.heldout_fraction, seed=self.cfg.trainer.seed)
        store = self._storage_device(train.feats.nbytes + held.feats.nbytes)
        ctx = int(self.cfg.model.context)
        counts = pdf_counts(utts.targets, num_pdfs)
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

    def save_checkpoint(self) -> None:
        n = self.state.epoch
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
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
        return ckpts[-1] if ckpts else None

    def load_checkpoint(self, path: Path) -> None:
        payload = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        if payload["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        np.random.set_state(payload["numpy_rng"])
        random.setstate(payload["python_rng"])
        self.state = TrainState(**payload["state"])
        log.info("resumed from %s (epoch/iteration %d, %.1f s trained)", path, self.state.epoch, self.state.wall_s)

    # ---------------------------------------------------------------- logging
    def _log(self, row: dict[str, Any]) -> None:
        row = {k: (float(v) if isinstance(v, (np.floating, torch.Tensor)) else v) for k, v in row.items()}
        self.state.history.append(row)
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
            loss = F.cross_entropy(self.model(x), y)
            loss.backward()
            return loss

        return closure

    def _set_lr_scale(self, scale: float) -> None:
        for g in self.optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
            g["lr"] = g["initial_lr"] * scale

    def _minibatch_epoch(self) -> dict[str, Any]:
        t = self.cfg.trainer
        total, n_frames, n_batches = 0.0, 0, 0
        batches = self.train_set.minibatches(t.batch_size, self.generator)
        n_total = max(1, len(self.train_set) // t.batch_size)
        for x, y in tqdm(batches, total=n_total, desc=f"epoch {self.state.epoch + 1}", leave=False,
                         disable=not sys.stderr.isatty()):
            loss = self.optimizer.step(self._closure_for(x, y))
            total += float(loss.detach()) * y.numel()
            n_frames += y.numel()
            n_batches += 1
        return {"train_loss": total / max(n_frames, 1), "frames": n_frames}

    def train(self) -> dict[str, Any]:
        t = self.cfg.trainer
        ckpt = self.latest_checkpoint() if t.resume else None
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        elif (self.exp / "train_log.jsonl").exists():
            (self.exp / "train_log.jsonl").unlink()
        use_newbob = (
            self.kind == OptimizerKind.MINIBATCH and t.newbob.enabled and self.cfg.optim.name == "sgd"
        )
        if self.state.epoch == 0 and not self.state.history:
            loss, acc = evaluate(self.model, self.heldout_set, t.eval_chunk)
            self.state.best_heldout = loss
            self._log({"index": 0, "wall_s": 0.0, "heldout_loss": loss, "heldout_acc": acc})
        limit = t.max_iters if self.kind == OptimizerKind.SAMPLED else t.max_epochs
        if use_newbob:
            self._set_lr_scale(self.state.lr_scale)
        while not self.state.done and self.state.epoch < limit:
            if t.time_budget_s and self.state.wall_s >= t.time_budget_s:
                log.info("time budget %.0f s reached", t.time_budget_s)
                break
            self._sync()
            start = time.perf_counter()
            if self.kind == OptimizerKind.SAMPLED:
                data = SampledData(NormalizedSource(self.train_set, self.model.norm),
                                   NormalizedSource(self.heldout_set, self.model.norm))
                stats = dict(self.optimizer.step(data) or {})
                frames = int(stats.get("grad_samples", 0)) + int(stats.get("curv_samples", 0))
                row_extra: dict[str, Any] = {f"opt_{k}": v for k, v in stats.items() if _is_number(v)}
            else:
                snapshot = None
                if use_newbob:
                    snapshot = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()))
                ep = self._minibatch_epoch()
                frames = ep["frames"]
                row_extra = {"train_loss": ep["train_loss"], "lr_scale": self.state.lr_scale}
                stats_fn = getattr(self.optimizer, "last_stats", None)
                if callable(stats_fn):
                    row_extra.update({f"opt_{k}": v for k, v in (stats_fn() or {}).items() if _is_number(v)})
            self._sync()
            elapsed = time.perf_counter() - start
            self.state.wall_s += elapsed
            self.state.frames_seen += frames
            self.state.epoch += 1
            loss, acc = evaluate(self.model, self.heldout_set, t.eval_chunk)
            if use_newbob:
                loss, acc = self._newbob(loss, acc, snapshot)
            self._log({"index": self.state.epoch, "wall_s": self.state.wall_s, "heldout_loss": loss,
                       "heldout_acc": acc, "frames_per_s": frames / max(elapsed, 1e-9), "epoch_s": elapsed,
                       **row_extra})  # fmt: skip
            self.save_checkpoint()
        return self.finish()

    def _newbob(self, loss: float, acc: float, snapshot) -> tuple[float, float]:
        nb = self.cfg.trainer.newbob
        prev = self.state.best_heldout
        if loss >= prev and snapshot is not None:
            log.info("epoch rejected: held-out loss %.4f >= %.4f; rolling back, halving lr", loss, prev)
            self.model.load_state_dict(snapshot[0])
            self.optimizer.load_state_dict(snapshot[1])
            loss, acc = evaluate(self.model, self.heldout_set, self.cfg.trainer.eval_chunk)
            self.state.halving = True
            self.state.lr_scale *= nb.halving_factor
            self._set_lr_scale(self.state.lr_scale)
            return loss, acc
        impr = (prev - loss) / max(abs(prev), 1e-12)
        self.state.best_heldout = loss
        if self.state.halving and impr < nb.end_halving_impr and self.state.epoch >= nb.min_epochs:
            log.info("newbob: relative improvement %.4f < %.4f, stopping", impr, nb.end_halving_impr)
            self.state.done = True
        if impr < nb.start_halving_impr:
            self.state.halving = True
        if self.state.halving:
            self.state.lr_scale *= nb.halving_factor
            self._set_lr_scale(self.state.lr_scale)
        return loss, acc

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def finish(self) -> dict[str, Any]:
        final = self.exp / "final.pt"
        with atomic_output(final) as tmp:
            torch.save(
                {"model": self.model.state_dict(), "feat_dim": self.model.feat_dim, "num_pdfs": self.num_pdfs,
                 "model_cfg": self.model.cfg.__dict__, "log_priors": log_priors(self.counts)},
                tmp,
            )  # fmt: skip
        last = self.state.history[-1]
        summary = {
            "system": self.exp.name,
            "optimizer": self.cfg.optim.name,
            "optimizer_kind": self.kind.value,
            "train_wall_s": round(self.state.wall_s, 3),
            "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
            "num_params": num_parameters(self.model),
            "epochs_or_iters": self.state.epoch,
            "frames_seen": self.state.frames_seen,
            "heldout_loss": last["heldout_loss"],
            "heldout_acc": last["heldout_acc"],
            "train_frames": len(self.train_set),
        }
        with atomic_output(self.exp / "train_summary.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=1))
        self._write_reports()
        return summary


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
