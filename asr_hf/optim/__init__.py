"""asr_hf.optim: model-agnostic curvature optimizers.

Hessian-free family (this package's composable pieces):

* curvature operators: :class:`GGNOperator`, :class:`HessianOperator` (``matvec``),
  with :func:`loss_and_gradient`, :func:`evaluate_loss`; the flat parameter view
  :class:`ParamLayout` and the loss algebra (:mod:`asr_hf.optim.losses`);
* solvers: :func:`conjugate_gradient` (CG / PCG / flexible PCG, Martens' grid and
  stopping rule, block-segmented lockstep solves);
* preconditioners: :class:`DiagonalPreconditioner`, :class:`LBFGSPreconditioner`;
* sampling: :class:`FixedFractionSchedule`, :class:`GeometricSchedule`, :class:`DataSampler`;
* blocks: :func:`parameter_blocks`, :class:`BlockLayout` (:mod:`asr_hf.optim.layout`);
* the optimizer: :class:`HessianFree` (registered as ``hf``, ``hf_diag``, ``hf_lbfgs``,
  ``hf_sampled``, ``hf_lbfgs_sampled``, ``hf_kfac``, ``hf_kfac_sampled``, ``hf_block``).

Also: KFAC, K-BFGS, K-BFGS(L) (their factored inverse as an operator on flat vectors:
:class:`KroneckerInverse`, a CG preconditioner) and first-order baselines (``kfac``, ``kbfgs``, ``kbfgs_l``,
``sgd``, ``adam``, ``adamw``, ``rmsprop``), heavyball's peer preconditioners (``soap``,
``shampoo``, ``psgd``; optional extra ``peers``, :mod:`asr_hf.optim.peers`), and the
multi-worker approximated-Hessian SGD (:class:`ApproxHessianSGD`, ``ahsgd``).  Data-parallel plumbing: :class:`DistReducer`,
:class:`ShardedSource` (see :mod:`asr_hf.optim.distributed`).

Optimizers are built by name through :func:`build_optimizer`.
"""

from asr_hf.optim.ahsgd import ApproxHessianSGD
from asr_hf.optim.base import (
    Closure,
    ExampleSource,
    LocalReducer,
    LossKind,
    OptimizerKind,
    Reducer,
    SampledData,
    TensorSource,
)
from asr_hf.optim.curvature import (
    CurvatureOperator,
    GGNOperator,
    GradientResult,
    HessianOperator,
    SourceChunks,
    evaluate_loss,
    loss_and_gradient,
)
from asr_hf.optim.layout import BlockLayout, ParamLayout, module_blocks, parameter_blocks
from asr_hf.optim.losses import apply_output_hessian, loss_sum, sample_targets
from asr_hf.optim.sequential import SequentialNet
from asr_hf.optim.distributed import DistReducer, ShardedSource, init_from_env, run_local_workers, shard_range
from asr_hf.optim.hf import HF_VARIANTS, HessianFree
from asr_hf.optim.hf_config import CurvatureKind, HFConfig
from asr_hf.optim.kron_operator import KroneckerInverse
from asr_hf.optim.lbfgs import LBFGSMemory
from asr_hf.optim.precond import (
    DiagonalPreconditioner,
    IdentityPreconditioner,
    LBFGSPreconditioner,
    Preconditioner,
    PreconditionerKind,
)
from asr_hf.optim.registry import (
    available_optimizers,
    build_optimizer,
    optimizer_info,
    optimizer_kind,
    register_optimizer,
)
from asr_hf.optim.sampling import DataSampler, FixedFractionSchedule, GeometricSchedule, SamplingKind
from asr_hf.optim.solvers import (
    CGResult,
    DenseOperator,
    LinearOperator,
    StopReason,
    conjugate_gradient,
    martens_grid,
)

__all__ = [
    "ApproxHessianSGD",
    "BlockLayout",
    "CGResult",
    "Closure",
    "CurvatureKind",
    "CurvatureOperator",
    "DataSampler",
    "DenseOperator",
    "DiagonalPreconditioner",
    "DistReducer",
    "ExampleSource",
    "FixedFractionSchedule",
    "GGNOperator",
    "GeometricSchedule",
    "GradientResult",
    "HFConfig",
    "HF_VARIANTS",
    "HessianFree",
    "HessianOperator",
    "IdentityPreconditioner",
    "KroneckerInverse",
    "LBFGSMemory",
    "LBFGSPreconditioner",
    "LinearOperator",
    "LocalReducer",
    "LossKind",
    "OptimizerKind",
    "ParamLayout",
    "Preconditioner",
    "PreconditionerKind",
    "Reducer",
    "SampledData",
    "SamplingKind",
    "SequentialNet",
    "ShardedSource",
    "SourceChunks",
    "StopReason",
    "TensorSource",
    "apply_output_hessian",
    "available_optimizers",
    "build_optimizer",
    "conjugate_gradient",
    "evaluate_loss",
    "init_from_env",
    "loss_and_gradient",
    "loss_sum",
    "martens_grid",
    "module_blocks",
    "optimizer_info",
    "optimizer_kind",
    "parameter_blocks",
    "register_optimizer",
    "run_local_workers",
    "sample_targets",
    "shard_range",
]
