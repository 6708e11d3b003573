"""Parameter blocks for block-diagonal Hessian-free (Zhang et al. 2017).

Block-diagonal HF keeps only the curvature between parameters of the same block,
``C_bd = sum_b P_b C P_b`` (``P_b`` the coordinate projection on block ``b``), and runs
CG independently per block.  Here the blocks are solved together: the curvature
operator computes all blocks' products in one batched pass
(:meth:`asr_hf.optim.curvature.SequentialNet.block_products`, or masked tangents
through ``matmat`` for other models) and :func:`asr_hf.optim.solvers.conjugate_gradient`
runs the ``B`` CG recurrences in lockstep with per-block scalars (``segments``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from asr_hf.optim.curvature import ParamLayout

Groups = Union[Sequence[Sequence[str]], Callable[[str], str]]
"""User-defined blocks: a list of groups of parameter-name glob patterns (a parameter
joins the first group with a matching pattern; unmatched parameters fall back to
per-layer blocks), or a function mapping a parameter name to a block name."""


@dataclass
class BlockLayout:
    """Assignment of every parameter (and so every flat element) to a block.

    Attributes:
        names: block names, index = block id.
        block_of_param: block id of each layout parameter.
        segments: block id of each flat element, int64 ``(P,)``.
    """

    names: list[str]
    block_of_param: list[int]
    segments: torch.Tensor

    @property
    def num_blocks(self) -> int:
        return len(self.names)

    def mask(self) -> torch.Tensor:
        """The ``(P, P)`` boolean mask of the block-diagonal part (tests only)."""
        return self.segments[:, None] == self.segments[None, :]

    def sizes(self) -> list[int]:
        return torch.bincount(self.segments, minlength=self.num_blocks).tolist()


def _layer_name(param_name: str) -> str:
    return param_name.rpartition(".")[0] or param_name


def parameter_blocks(layout: ParamLayout, groups: Optional[Groups] = None) -> BlockLayout:
    """Blocks over ``layout``'s parameters: per layer (the module owning the
    parameter, e.g. a Linear's weight and bias) by default, or ``groups``.

    Raises:
        ValueError: if a pattern group matches no parameter.
    """
    keys: list[str] = []
    if groups is None:
        keys = [_layer_name(n) for n in layout.names]
    elif callable(groups):
        keys = [str(groups(n)) for n in layout.names]
    else:
        used = [False] * len(groups)
        for n in layout.names:
            for gi, pats in enumerate(groups):
                if any(fnmatch.fnmatchcase(n, pat) for pat in pats):
                    keys.append(f"group{gi}")
                    used[gi] = True
                    break
            else:
                keys.append(_layer_name(n))
        if not all(used):
            raise ValueError(f"block groups {[g for g, u in zip(groups, used) if not u]} match no parameter")
    names: list[str] = []
    ids: dict[str, int] = {}
    for k in keys:
        if k not in ids:
            ids[k] = len(names)
            names.append(k)
    block_of_param = [ids[k] for k in keys]
    segments = torch.cat(
        [torch.full((n,), b, dtype=torch.int64) for n, b in zip(layout.numels, block_of_param)]
    ).to(layout.device)
    return BlockLayout(names, block_of_param, segments)


def module_blocks(model: nn.Module, groups: Optional[Groups] = None) -> BlockLayout:
    """:func:`parameter_blocks` for all trainable parameters of ``model``."""
    return parameter_blocks(ParamLayout.from_module(model), groups)
