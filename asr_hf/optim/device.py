"""Device settings of the curvature code: the chunk size of forward/backward passes and
the TF32 switch for CUDA float32 matrix products."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Optional

import torch
from torch import nn

logger = logging.getLogger(__name__)


CPU_CHUNK_SIZE = 4096
"""Examples per chunk off CUDA (and the floor on CUDA)."""

MAX_CHUNK_SIZE = 65536
"""Largest automatic chunk: beyond it a chunk's matrix products are long past saturating
a GPU and the only effect would be a larger working set."""


def auto_chunk_size(
    model: nn.Module,
    device: torch.device | str,
    *,
    free_bytes: Optional[int] = None,
    memory_fraction: float = 0.25,
) -> int:
    """Examples per forward/backward chunk for gradients, products and losses.

    Off CUDA: :data:`CPU_CHUNK_SIZE`.  On CUDA: the largest power of two in
    ``[CPU_CHUNK_SIZE, MAX_CHUNK_SIZE]`` whose working set fits in ``memory_fraction`` of
    the free device memory (``torch.cuda.mem_get_info`` unless ``free_bytes`` is given).
    The working set of one example is estimated as ``4 * sum_l (d_in,l + d_out,l)``
    elements over the model's weight matrices: the chunk's forward cache (every layer's
    input and the output Hessian factor) plus the R-forward / backward temporaries and
    the derivative a product computes per layer.  (The curvature sample's forward cache,
    kept across CG products, is separate: ``N_curv / chunk`` chunk caches.)

    Args:
        model: the network (its 2-D parameters' shapes and dtype are read).
        device: where the products run.
        free_bytes: free device memory (tests; default: queried).
        memory_fraction: share of the free memory one chunk may use.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_CHUNK_SIZE
    params = [p for p in model.parameters() if p.requires_grad]
    width = sum(int(p.shape[0]) + int(p.shape[1]) for p in params if p.dim() == 2)
    if width == 0:
        return CPU_CHUNK_SIZE
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    per_example = 4 * width * params[0].element_size()
    fit = int(memory_fraction * free_bytes) // per_example
    chunk = CPU_CHUNK_SIZE
    while chunk * 2 <= min(fit, MAX_CHUNK_SIZE):
        chunk *= 2
    logger.info("chunk size %d (%.1f GB free on %s, ~%d bytes per example)", chunk, free_bytes / 1e9, device, per_example)
    return chunk


@contextlib.contextmanager
def tf32_matmuls(enabled: bool, device: torch.device | str) -> Iterator[None]:
    """Inside the block, CUDA float32 matrix products run in TF32 (``enabled``: tensor
    cores, operands rounded to a 10-bit mantissa, float32 accumulation) or in full IEEE
    float32 (not ``enabled``); the previous setting is restored afterwards.  A no-op off
    CUDA.  Element-wise ops, reductions and level-1 BLAS (``torch.dot``: CG's inner
    products) are never TF32.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    try:
        old = matmul.fp32_precision
        matmul.fp32_precision = "tf32" if enabled else "ieee"
        restore = lambda: setattr(matmul, "fp32_precision", old)  # noqa: E731
    except (AttributeError, RuntimeError):  # older torch, or the legacy API in use
        old_flag = matmul.allow_tf32
        matmul.allow_tf32 = bool(enabled)
        restore = lambda: setattr(matmul, "allow_tf32", old_flag)  # noqa: E731
    try:
        yield
    finally:
        restore()
