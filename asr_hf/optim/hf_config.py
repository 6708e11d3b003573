"""The options of the Hessian-free family (:class:`HFConfig`), one dataclass for every
registered variant (``hf``, ``hf_diag``, ``hf_lbfgs``, ``hf_sampled``, ``hf_lbfgs_sampled``,
``hf_kfac``, ``hf_kfac_sampled``, ``hf_block``: each a preset of these fields, see :mod:`asr_hf.optim.hf`)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Optional

from asr_hf.optim.curvature import BACKENDS
from asr_hf.optim.precond import LBFGSPairSelection, LBFGSPairSource, PreconditionerKind
from asr_hf.optim.sampling import SamplingKind


class CurvatureKind(str, enum.Enum):
    GGN = "ggn"
    HESSIAN = "hessian"


@dataclass
class HFConfig:
    """Options of :class:`HessianFree` (every registered variant takes them as keyword
    arguments; an unknown name is a ``TypeError``).

    Defaults from Martens (2010): CG cap 250, grid ``ceil(5 * 1.3^j)``, progress
    tolerance 5e-4 with window ``max(10, 0.1 i)``, warm-start decay 0.95, damping
    boost 3/2 and drop 2/3 at ``rho`` 1/4 and 3/4, Armijo ``c = 1e-2`` with rate 0.8,
    preconditioner exponent 0.75.  From Kingsbury et al. (2012): gradient on all
    training data, curvature on 1%.  Not fixed by the papers (choices made here):
    ``initial_damping = 1`` (the recipes' ``conf/optim/hf*.yaml`` use 0.01 and a 5% curvature
    sample, measured on the synthetic BN corpus), the geometric schedule's ``initial``/``growth``, its
    curvature cap (the fixed schedule's 1%, so the accelerated and the baseline runs end
    on equal curvature samples), L-BFGS memory 40 with 10 pairs per solve, ``ls_max_tries = 20``.
    """

    # variant
    curvature: CurvatureKind = CurvatureKind.GGN
    preconditioner: PreconditionerKind = PreconditionerKind.NONE
    sampling: SamplingKind = SamplingKind.FIXED
    block_diagonal: bool = False
    blocks: Optional[list[list[str]]] = None  # parameter-name glob groups; None = per layer
    # samples: fixed-fraction schedule (Kingsbury et al. 2012)
    grad_fraction: float = 1.0
    curv_fraction: float = 0.01
    # samples: geometric schedule (Sainath et al. 2013)
    grad_initial: float = 0.1
    grad_growth: float = 1.25
    grad_max_fraction: float = 1.0
    curv_initial: float = 0.002
    curv_growth: float = 1.25
    curv_max_fraction: float = 0.01  # the fixed schedule's fraction: the two differ only in the schedule
    # absolute caps / floors for both schedules
    grad_min_size: int = 1
    curv_min_size: int = 1
    grad_max_size: Optional[int] = None
    curv_max_size: Optional[int] = None
    nested_samples: bool = True  # curvature sample drawn as a prefix of the gradient sample's permutation
    heldout_size: Optional[int] = None  # None: the whole held-out set each iteration
    chunk_size: Optional[int] = None  # examples per forward/backward chunk; None: auto_chunk_size (4096 off CUDA)
    # objective and damping
    l2: float = 0.0  # objective += 0.5 * l2 * |theta|^2
    initial_damping: float = 1.0
    damping_boost: float = 1.5
    damping_drop: float = 2.0 / 3.0
    rho_low: float = 0.25
    rho_high: float = 0.75
    min_damping: float = 0.0
    # CG
    cg_max_iters: int = 250
    cg_rtol: float = 0.0  # extra stop |r| <= rtol |b| (0: off)
    cg_progress_tol: float = 5e-4
    cg_progress_window: int = 10
    cg_grid_start: float = 5.0
    cg_grid_ratio: float = 1.3
    warm_start_decay: float = 0.95
    flexible_cg: bool = True
    # preconditioners
    precond_exponent: float = 0.75
    # L-BFGS (Sainath et al. 2013): pairs (s, A s) from earlier HF iterations' CG runs, held
    # fixed during the next solve (Morales & Nocedal 2000), y shifted by the damping change;
    # each run adds its first lbfgs_pairs_per_solve pairs to a memory of lbfgs_history
    # (oldest dropped).  See LBFGSPreconditioner for the measurements behind 40 / 10 / first.
    lbfgs_history: int = 40
    lbfgs_pairs_per_solve: int = 10
    lbfgs_pairs: str = "previous"  # previous | in_solve (= CG in exact arithmetic) | both
    lbfgs_selection: str = "first"  # first | even | last
    lbfgs_refresh: bool = False  # recompute y = A_k s of the kept pairs each solve (m products)
    # step selection
    backtrack: bool = True
    line_search: bool = True
    ls_c: float = 1e-2
    ls_rate: float = 0.8
    ls_max_tries: int = 20
    # compute
    backend: str = "auto"  # curvature back end: auto | sequential | func | double_backward
    cache_forward: bool = True  # cache the curvature sample's forward pass across CG products
    tf32: bool = True  # TF32 matmuls on CUDA for gradients and products (held-out losses stay IEEE fp32)
    seed: int = 0

    def __post_init__(self) -> None:
        self.curvature = CurvatureKind(self.curvature)
        self.preconditioner = PreconditionerKind(self.preconditioner)
        self.sampling = SamplingKind(self.sampling)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        self.lbfgs_pairs = LBFGSPairSource(self.lbfgs_pairs).value
        self.lbfgs_selection = LBFGSPairSelection(self.lbfgs_selection).value
        if self.block_diagonal and self.preconditioner in (PreconditionerKind.LBFGS, PreconditionerKind.KFAC):
            raise ValueError(
                f"block-diagonal HF supports preconditioner 'none' or 'diagonal', not {self.preconditioner.value!r}"
            )
        if (
            self.preconditioner == PreconditionerKind.LBFGS
            and self.lbfgs_pairs != LBFGSPairSource.PREVIOUS.value
            and not self.flexible_cg
        ):
            raise ValueError(
                f"lbfgs_pairs={self.lbfgs_pairs} changes the preconditioner inside the solve, which plain PCG "
                "cannot take: set flexible_cg=true (or lbfgs_pairs=previous, fixed during each solve)"
            )
        if self.lbfgs_history < 1 or self.lbfgs_pairs_per_solve < 1:
            raise ValueError("lbfgs_history and lbfgs_pairs_per_solve must be >= 1 (pairs per solve: at most the history)")
        if self.curvature == CurvatureKind.HESSIAN and self.backend == "sequential":
            raise ValueError("the 'sequential' back end computes GGN products only")
        if not (0 < self.damping_drop <= 1 <= self.damping_boost):
            raise ValueError("need 0 < damping_drop <= 1 <= damping_boost")
        if (self.chunk_size is not None and self.chunk_size < 1) or self.cg_max_iters < 1:
            raise ValueError("chunk_size and cg_max_iters must be positive")
        # lambda only ever changes by factors: 0 would stay 0 (an undamped, often indefinite solve)
        if not (math.isfinite(self.initial_damping) and self.initial_damping > 0):
            raise ValueError(f"initial_damping must be > 0, got {self.initial_damping}")
        if not (math.isfinite(self.min_damping) and 0 <= self.min_damping <= self.initial_damping):
            raise ValueError(
                f"min_damping must be in [0, initial_damping={self.initial_damping}], got {self.min_damping}"
            )


__all__ = ["CurvatureKind", "HFConfig"]
