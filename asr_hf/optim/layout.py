"""Flat-vector views of a model's parameters, and their division into blocks.

* :class:`ParamLayout`: the order, shapes and offsets that turn per-parameter tensors into
  one flat vector ``(P,)`` (``P = sum_i numel(theta_i)``) and back.  Curvature operators,
  CG, the preconditioners and the approximated-Hessian sync all work on such vectors.
* :class:`BlockLayout` / :func:`parameter_blocks`: parameter blocks for block-diagonal
  Hessian-free (Zhang et al. 2017).  Block-diagonal HF keeps only the curvature between
  parameters of the same block, ``C_bd = sum_b P_b C P_b`` (``P_b`` the coordinate
  projection on block ``b``), and runs CG independently per block.  Here the blocks are
  solved together: the curvature operator computes all blocks' products in one batched
  pass (:meth:`asr_hf.optim.sequential.SequentialNet.block_products`, or masked tangents
  through ``matmat`` for other models) and :func:`asr_hf.optim.solvers.conjugate_gradient`
  runs the ``B`` CG recurrences in lockstep with per-block scalars (``segments``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

Tensor = torch.Tensor


class ParamLayout:
    """Flat-vector view of a list of named parameters (order = ``model.named_parameters()``).

    Flat vectors have shape ``(P,)`` with ``P = sum(p.numel())``; parameter ``i``
    occupies ``flat[offsets[i] : offsets[i] + numels[i]]``.
    """

    def __init__(self, named_params: Sequence[tuple[str, nn.Parameter]]) -> None:
        if not named_params:
            raise ValueError("no trainable parameters")
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.offsets = [0]
        for k in self.numels[:-1]:
            self.offsets.append(self.offsets[-1] + k)
        self.numel = sum(self.numels)
        self.index = {id(p): i for i, p in enumerate(self.params)}

    @classmethod
    def from_module(cls, model: nn.Module) -> "ParamLayout":
        return cls([(n, p) for n, p in model.named_parameters() if p.requires_grad])

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        """Per-parameter tensors (shapes ``self.shapes``) -> flat ``(P,)``."""
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, flat: Tensor) -> list[Tensor]:
        """Flat ``(P,)`` -> per-parameter views."""
        return [flat[o : o + k].view(s) for o, k, s in zip(self.offsets, self.numels, self.shapes)]

    def flatten_batched(self, tensors: Sequence[Tensor]) -> Tensor:
        """Per-parameter ``(k, *shape)`` -> ``(P, k)``."""
        k = tensors[0].shape[0]
        return torch.cat([t.reshape(k, -1) for t in tensors], dim=1).T

    def unflatten_batched(self, mat: Tensor) -> list[Tensor]:
        """``(P, k)`` -> per-parameter ``(k, *shape)`` tensors."""
        rows = mat.T
        k = rows.shape[0]
        return [rows[:, o : o + n].reshape(k, *s) for o, n, s in zip(self.offsets, self.numels, self.shapes)]

    def get_flat(self) -> Tensor:
        """A flat copy of the current parameter values."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def set_flat_(self, flat: Tensor) -> None:
        """Copy ``flat`` into the parameters in place."""
        for p, v in zip(self.params, self.unflatten(flat)):
            p.copy_(v)


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
