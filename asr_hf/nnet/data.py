"""Frame-level data for the hybrid acoustic model.

All frames of a set of utterances are concatenated into one ``(N, D)`` feature
tensor with per-frame pdf targets and per-frame utterance bounds.  A spliced
input for frame ``i`` is ``feats[clamp(i + offsets, start_i, end_i - 1)]``
flattened, so context never crosses an utterance boundary (edge frames are
repeated, as Kaldi's splicing does), and a whole minibatch is gathered with
one indexing operation: no per-frame Python loops.

The tensors live on the training device when they fit (``device``), else on
the CPU and minibatches are moved as they are drawn.  On the device the whole data
path runs there: the index list of a pass (an epoch's permutation, an HF sample) is
copied to the device once, and each chunk is sliced, spliced and gathered on the
device, with no per-batch host-device copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from asr_hf.utils.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Utterances:
    """Concatenated frames of several utterances (CPU numpy, before splitting)."""

    ids: list[str]
    feats: np.ndarray  # (N, D) float32
    targets: np.ndarray  # (N,) int64, -1 where unknown
    lengths: np.ndarray  # (U,) int64

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())


def load_utterances(feature_cuts, alignment_cuts=None, require_alignment: bool = True) -> Utterances:
    """Read features (and ``pdf_ali`` targets) of every cut into one array.

    Args:
        feature_cuts: lhotse cuts with features (e.g. ``data/fbank/cuts_train.jsonl.gz``).
        alignment_cuts: cuts carrying the ``pdf_ali`` custom field, matched by id;
            ``None`` when the feature cuts carry it themselves or for unlabelled data.
        require_alignment: raise if a feature cut has no alignment (else it is skipped).

    Raises:
        DataError: an alignment whose length differs from its feature matrix by
            more than one frame (named), or no usable utterance.
    """
    ali_by_id = None
    if alignment_cuts is not None:
        ali_by_id = {c.id: c for c in alignment_cuts}
    ids, feats, targets, lengths = [], [], [], []
    skipped = 0
    for cut in feature_cuts:
        f = cut.load_features()
        ali = None
        src = cut if ali_by_id is None else ali_by_id.get(cut.id)
        if src is not None and src.has_custom("pdf_ali"):
            ali = np.asarray(src.load_pdf_ali(), dtype=np.int64).reshape(-1)
        if ali is None:
            if require_alignment:
                skipped += 1
                continue
            ali = np.full(f.shape[0], -1, dtype=np.int64)
        if abs(ali.shape[0] - f.shape[0]) > 1:
            raise DataError(cut.id, f"alignment has {ali.shape[0]} frames but features have {f.shape[0]}")
        n = min(ali.shape[0], f.shape[0])
        ids.append(cut.id)
        feats.append(np.asarray(f[:n], dtype=np.float32))
        targets.append(ali[:n])
        lengths.append(n)
    if skipped:
        log.warning("%d utterances without alignment skipped (e.g. failed GMM alignment)", skipped)
    if not ids:
        raise DataError("cuts", "no utterance with features and alignment")
    return Utterances(ids, np.concatenate(feats), np.concatenate(targets), np.asarray(lengths, dtype=np.int64))


def heldout_split_indices(
    num_utts: int, fraction: float, seed: int, groups: Optional[Sequence[str]] = None
) -> tuple[list[int], list[int]]:
    """``(train, heldout)`` utterance positions, each ascending: a random ``fraction`` held out.

    Args:
        num_utts: number of utterances.
        fraction: share of the groups to hold out.
        seed: the draw.
        groups: per utterance, the group it belongs to (e.g. the source utterance of a
            speed-perturbed copy); a group is held out or trained on whole, so no copy of a
            held-out utterance is trained on.  Default: each utterance its own group.  With
            one group per utterance the split equals the ungrouped one.
    """
    rng = np.random.default_rng(seed)
    keys = list(range(num_utts)) if groups is None else list(groups)
    if len(keys) != num_utts:
        raise ValueError(f"{len(keys)} group keys for {num_utts} utterances")
    order = list(dict.fromkeys(keys))  # groups in order of first appearance
    n_held = max(1, int(round(fraction * len(order)))) if fraction > 0 and order else 0
    held_groups = {order[i] for i in rng.permutation(len(order))[:n_held].tolist()}
    held = [i for i, k in enumerate(keys) if k in held_groups]
    return [i for i, k in enumerate(keys) if k not in held_groups], held


def split_heldout(utts: Utterances, fraction: float, seed: int) -> tuple[Utterances, Utterances]:
    """Hold out a random ``fraction`` of utterances (never frames of one utterance in both, nor
    a speed-perturbed copy of a held-out utterance in training)."""
    from asr_hf.data.cuts import perturbation_source

    groups = [perturbation_source(i) for i in utts.ids]
    train, held = heldout_split_indices(len(utts.ids), fraction, seed, groups)
    bounds = np.concatenate([[0], np.cumsum(utts.lengths)])

    def take(sel: Sequence[int]) -> Utterances:
        if not sel:
            return Utterances([], np.zeros((0, utts.feats.shape[1]), np.float32), np.zeros(0, np.int64),
                              np.zeros(0, np.int64))
        idx = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in sel])
        return Utterances([utts.ids[i] for i in sel], utts.feats[idx], utts.targets[idx], utts.lengths[list(sel)])

    return take(train), take(held)


class FrameSet:
    """Spliced-frame access to concatenated utterances; an optimizer ``ExampleSource``.

    Args:
        utts: the frames.
        context: frames of left/right context.
        device: where inputs are produced; the tensors are stored there too
            unless ``store_on`` says otherwise (e.g. "cpu" when they do not fit).
    """

    def __init__(self, utts: Utterances, context: int, device: torch.device | str = "cpu",
                 store_on: Optional[torch.device | str] = None) -> None:
        self.device = torch.device(device)
        store = torch.device(store_on) if store_on is not None else self.device
        self.ids = utts.ids
        self.context = context
        self.feats = torch.from_numpy(utts.feats).to(store)
        self.targets = torch.from_numpy(utts.targets).to(store)
        lengths = torch.from_numpy(utts.lengths)
        ends = torch.cumsum(lengths, 0)
        starts = ends - lengths
        utt_of_frame = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        self.start = starts[utt_of_frame].to(store)
        self.end = ends[utt_of_frame].to(store)
        self.offsets = torch.arange(-context, context + 1, device=store)
        self.lengths = lengths

    def __len__(self) -> int:
        return int(self.feats.shape[0])

    @property
    def feat_dim(self) -> int:
        return int(self.feats.shape[1])

    @property
    def input_dim(self) -> int:
        return self.feat_dim * (2 * self.context + 1)

    def splice(self, idx: torch.Tensor) -> torch.Tensor:
        """``(B,)`` frame indices -> ``(B, (2c+1) * D)`` spliced inputs on ``self.device``."""
        idx = idx.to(self.feats.device)
        pos = idx[:, None] + self.offsets[None, :]
        pos = torch.maximum(pos, self.start[idx][:, None])
        pos = torch.minimum(pos, self.end[idx][:, None] - 1)
        x = self.feats[pos].reshape(idx.shape[0], -1)
        return x.to(self.device, non_blocking=True)

    @property
    def storage_device(self) -> torch.device:
        """Where the frames are stored (``device``, or the CPU when they are streamed)."""
        return self.feats.device

    def batches(self, indices: torch.Tensor, chunk_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(inputs, targets)`` chunks covering ``indices`` in order (the ExampleSource contract).

        ``indices`` move to the storage device once per call, not once per chunk."""
        indices = indices.to(self.feats.device)
        for s in range(0, indices.numel(), chunk_size):
            idx = indices[s : s + chunk_size]
            yield self.splice(idx), self.targets[idx].to(self.device, non_blocking=True)

    def minibatches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled epoch of minibatches (last partial batch dropped when tiny)."""
        perm = torch.randperm(len(self), generator=generator)
        n = len(self)
        full = n // batch_size
        stop = n if n - full * batch_size >= batch_size // 2 else full * batch_size
        yield from self.batches(perm[: max(stop, min(n, batch_size))], batch_size)

    def utterance_slices(self) -> Iterator[tuple[str, slice]]:
        end = 0
        for uid, n in zip(self.ids, self.lengths.tolist()):
            yield uid, slice(end, end + n)
            end += n

    def input_stats(self, max_frames: int = 200_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and inverse std of spliced inputs over (a sample of) the frames."""
        return input_stats(self, max_frames, seed)


def input_stats(source, max_frames: int = 200_000, seed: int = 0, reducer=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and inverse std of the inputs of an ``ExampleSource`` over a random sample of
    ``max_frames`` of its examples, summed over data-parallel workers by ``reducer``.

    With a :class:`~asr_hf.optim.distributed.ShardedSource` every rank draws the same
    global sample, so the statistics equal the single-process ones over the union.
    """
    g = torch.Generator().manual_seed(seed)
    n = len(source)
    idx = torch.randperm(n, generator=g)[: min(n, max_frames)].sort().values
    acc: Optional[torch.Tensor] = None
    for x, _ in source.batches(idx, 65536):
        x = x.double()
        part = torch.cat([x.sum(0), x.pow(2).sum(0), x.new_tensor([x.shape[0]])])
        acc = part if acc is None else acc + part
    if acc is None:  # this worker's shard holds none of the sample
        dim = getattr(getattr(source, "local", source), "input_dim")
        acc = torch.zeros(2 * dim + 1, dtype=torch.float64)
    acc = acc.cpu()
    if reducer is not None:
        acc = reducer.all_reduce_(acc)
    d = (acc.numel() - 1) // 2
    count = float(acc[-1])
    if count < 2:
        raise ValueError("input statistics need at least two frames")
    mean = acc[:d] / count
    var = ((acc[d : 2 * d] - count * mean.pow(2)) / (count - 1)).clamp_min(0.0)
    std = var.sqrt().clamp_min(1e-5)
    return mean.float(), (1.0 / std).float()


def pdf_counts(targets: np.ndarray | torch.Tensor, num_pdfs: int) -> np.ndarray:
    t = torch.as_tensor(targets)
    t = t[t >= 0]
    return torch.bincount(t.cpu(), minlength=num_pdfs).numpy()


def log_priors(counts: np.ndarray) -> np.ndarray:
    """Kaldi nnet1 log-priors of the pdfs (:func:`asr_hf.nnet.priors.priors_from_counts`,
    the rule decoding uses too)."""
    from asr_hf.nnet.priors import priors_from_counts

    return priors_from_counts(counts)
