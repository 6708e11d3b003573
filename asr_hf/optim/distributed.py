"""Data-parallel plumbing on :mod:`torch.distributed` (NCCL on GPUs, gloo on CPU).

The optimizers never talk to :mod:`torch.distributed` directly: they sum through a
:class:`~asr_hf.optim.base.Reducer`.  This module supplies the distributed one and
the data view that makes a sharded run equal a single-process run over the union:

* :class:`DistReducer` sums (``all_reduce``), gathers and broadcasts over a process
  group (tensors, and picklable objects for the trainer's checkpoints, plus a barrier)
  and keeps the seconds and bytes spent in tensor collectives, so a run can report its
  communication share; :func:`wrap_data_parallel` and :func:`shutdown` are the rest of
  what the trainer needs, so :mod:`asr_hf.nnet` never imports :mod:`torch.distributed`.
* :class:`ShardedSource` puts a rank's local shard of a data set at its offset in the
  *global* index space.  Every rank runs the same sampler (same seed) over the global
  size, so all ranks draw the same gradient / curvature / held-out index sets; each
  rank evaluates only the indices that fall in its shard and the reducer sums the
  parts.  The gradient, every curvature-vector product and every held-out loss are
  therefore the single-process quantities over the union of the shards (up to the
  order of floating-point summation), whatever the world size.

Processes are started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); :func:`init_from_env` joins the
group.  Nothing here is a communication layer of its own.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist

from asr_hf.optim.base import ExampleSource

Tensor = torch.Tensor
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device_type: str, backend: str = "auto") -> Optional[DistContext]:
    """Join the process group torchrun describes in the environment.

    Returns ``None`` for a plain single-process run (``WORLD_SIZE`` unset or 1).
    ``backend="auto"`` picks NCCL when every local process has a GPU of its own and
    gloo otherwise (CPU runs, or several processes sharing one GPU, which NCCL
    refuses).  An already initialised default group is reused as it is.
    """
    if dist.is_initialized():  # e.g. a launcher or test harness set the group up already
        if dist.get_world_size() <= 1:
            return None
        return DistContext(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend()
        )
    world = env_world_size()
    if world <= 1:
        return None
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world} but {var} is not set: launch multi-process runs with torchrun")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if backend == "auto":
        own_gpu = device_type == "cuda" and torch.cuda.device_count() >= local_world
        backend = "nccl" if own_gpu else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"distributed backend must be auto, nccl or gloo, got {backend!r}")
    dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), backend)


class DistReducer:
    """A :class:`~asr_hf.optim.base.Reducer` over a :mod:`torch.distributed` group.

    Args:
        group: the process group (default: the world).

    Attributes:
        comm_seconds: wall seconds spent inside collectives (including waiting for the
            slowest rank, which is what a run loses to synchronisation).
        comm_bytes: payload bytes this rank contributed to collectives.
        calls: number of collectives.
    """

    def __init__(self, group: Optional[dist.ProcessGroup] = None) -> None:
        if not dist.is_initialized():
            raise RuntimeError("DistReducer needs an initialised torch.distributed process group")
        self.group = group
        self.comm_seconds = 0.0
        self.comm_bytes = 0
        self.calls = 0

    @property
    def world_size(self) -> int:
        return dist.get_world_size(self.group)

    @property
    def rank(self) -> int:
        return dist.get_rank(self.group)

    def _timed(self, tensor: Tensor, fn) -> None:
        sync = tensor.is_cuda
        if sync:
            torch.cuda.synchronize(tensor.device)
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize(tensor.device)
        self.comm_seconds += time.perf_counter() - t0
        self.comm_bytes += tensor.numel() * tensor.element_size()
        self.calls += 1

    def all_reduce_(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the group, in place; returns it.

        Non-contiguous tensors (e.g. transposed views) are reduced through a contiguous
        copy: the backends reduce raw memory, and ranks may hold different layouts.
        """
        buf = tensor if tensor.is_contiguous() else tensor.contiguous()
        self._timed(buf, lambda: dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group))
        if buf is not tensor:
            tensor.copy_(buf)
        return tensor

    def all_gather(self, tensor: Tensor) -> Tensor:
        """Every rank's ``tensor`` stacked in rank order: shape ``(world_size, *tensor.shape)``."""
        flat = tensor.reshape(-1).contiguous()
        out = torch.empty(self.world_size * flat.numel(), dtype=tensor.dtype, device=tensor.device)
        self._timed(tensor, lambda: dist.all_gather_into_tensor(out, flat, group=self.group))
        return out.view(self.world_size, *tensor.shape)

    def broadcast_(self, tensor: Tensor, src: int = 0) -> Tensor:
        """Overwrite ``tensor`` with rank ``src``'s, in place; returns it."""
        buf = tensor if tensor.is_contiguous() else tensor.contiguous()
        self._timed(buf, lambda: dist.broadcast(buf, src=src, group=self.group))
        if buf is not tensor:
            tensor.copy_(buf)
        return tensor

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order (not timed: bookkeeping, not data)."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=src, group=self.group)
        return box[0]

    def barrier(self) -> None:
        """Return once every rank of the group has called it."""
        dist.barrier(group=self.group)

    def stats(self) -> dict[str, float]:
        return {"comm_seconds": self.comm_seconds, "comm_bytes": float(self.comm_bytes), "comm_calls": float(self.calls)}


def shutdown() -> None:
    """Leave the default process group (after a torchrun job's last collective)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged
    over the ranks in backward; buffers are not broadcast: they hold fixed statistics)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None, broadcast_buffers=False)


def shard_range(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``n`` items (sizes differ by <= 1)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class ShardedSource:
    """A rank's local :class:`ExampleSource` placed at ``offset`` in a global index space.

    ``len()`` is the global size; :meth:`batches` keeps the requested (global) indices
    that fall in ``[offset, offset + len(local))`` and yields those local examples in
    order.  A rank whose shard holds none of the indices yields nothing; reductions
    still run on every rank because the optimizers reduce once per quantity, never per
    chunk.

    Args:
        local: this rank's examples.
        offset: global index of ``local``'s first example.
        total: the global number of examples (sum of all shards).
    """

    def __init__(self, local: ExampleSource, offset: int, total: int) -> None:
        if not 0 <= offset <= total - len(local):
            raise ValueError(f"shard [{offset}, {offset + len(local)}) outside global size {total}")
        self.local = local
        self.offset = offset
        self.total = total

    @classmethod
    def from_reducer(cls, local: ExampleSource, reducer) -> "ShardedSource":
        """Offsets from every rank's local size (ranks hold consecutive shards in rank order)."""
        sizes = reducer.all_gather(torch.tensor([len(local)], dtype=torch.int64))
        sizes = sizes.reshape(-1).tolist()
        rank = getattr(reducer, "rank", 0)
        return cls(local, int(sum(sizes[:rank])), int(sum(sizes)))

    def __len__(self) -> int:
        return self.total

    def local_indices(self, indices: Tensor) -> Tensor:
        """The requested global indices that are local, as local indices."""
        lo, hi = self.offset, self.offset + len(self.local)
        keep = (indices >= lo) & (indices < hi)
        return indices[keep] - lo

    def batches(self, indices: Tensor, chunk_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        local = self.local_indices(indices.cpu())
        if local.numel():
            yield from self.local.batches(local, chunk_size)


def _worker_entry(rank: int, fn, world_size: int, init_file: str, backend: str, args: tuple) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_local_workers(fn, world_size: int, *args, backend: str = "gloo", tmp_dir: Optional[str] = None) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` fresh processes on this host,
    each inside an initialised process group (tests and benchmarks; jobs use torchrun).

    ``fn`` must be picklable (a module-level function).  A worker's exception fails the
    call with that worker's traceback.
    """
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        init_file = os.path.join(d, "rendezvous")
        mp.start_processes(
            _worker_entry, args=(fn, world_size, init_file, backend, args), nprocs=world_size,
            join=True, start_method="spawn",
        )  # fmt: skip
