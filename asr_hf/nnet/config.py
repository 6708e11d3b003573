"""Structured (dataclass) configs for acoustic-model training, registered with Hydra.

Config groups mirror the architecture: ``data``, ``features``, ``model``,
``optim``, ``trainer``, ``decode``.  The YAML files under ``conf/`` fill them;
the schema here makes a misspelt key or a wrong type an error (``struct``
mode), not a silently ignored override.  Optimizer-specific options live in
``optim.options``; :func:`compose` checks their names and types against the
optimizer's registry entry (:func:`asr_hf.optim.registry.check_optimizer_options`) and
types them with its options dataclass (:func:`asr_hf.optim.registry.options_class`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from asr_hf.nnet.model import DNNConfig


@dataclass
class DataConf:
    """Where the frames and their targets come from (paths relative to the recipe dir)."""

    name: str = "synth_bn"
    feats_dir: str = "data/fbank"  # holds cuts_<split>.jsonl.gz with features
    ali_dir: str = "exp/tri1/ali"  # cuts_<split>.jsonl.gz with pdf_ali, info.json with num_pdfs
    train_split: str = "train"
    heldout_fraction: float = 0.05  # of training utterances; separate from dev
    num_pdfs: int = 0  # 0: read from ali_dir/info.json
    corpus_dir: str = "data/corpus"
    lang_dir: str = "data/lang"


@dataclass
class FeaturesConf:
    kind: str = "fbank"
    num_mel_bins: int = 40


@dataclass
class OptimConf:
    """An optimizer from :mod:`asr_hf.optim.registry` and its keyword options.

    ``options`` composes as a mapping (so ``+optim.options.X=...`` reaches the registry's
    check, whose error names the valid keys); :func:`compose` then replaces it by the
    optimizer's typed options (:func:`asr_hf.optim.registry.options_class`), every option
    with its value, so a later assignment of a wrong type or an unknown key is an error.
    """

    name: str = "sgd"
    options: Any = field(default_factory=dict)


@dataclass
class NewbobConf:
    """Kaldi nnet1's learning-rate schedule on held-out frame accuracy (or cross-entropy)."""

    enabled: bool = True
    criterion: str = "accuracy"  # accuracy (nnet1 of the papers' era) | loss (later nnet1)
    start_halving_inc: float = 0.5  # accuracy: frame-accuracy gain, % points
    end_halving_inc: float = 0.1
    start_halving_impr: float = 0.01  # loss: relative cross-entropy improvement
    end_halving_impr: float = 0.001
    halving_factor: float = 0.5
    min_epochs: int = 3


@dataclass
class ConvergenceConf:
    """Stopping rule of every optimizer that is not on newbob (the HF family, Adam, KFAC,
    K-BFGS, the peers): stop once the held-out cross-entropy improved by less than
    ``rel_tol`` (relative) over the last ``window`` HF iterations / epochs that took a step,
    or after ``max_rejected`` HF iterations in a row rejected their step, or at
    ``trainer.max_iters`` / ``max_epochs``.  A rejected HF step (``opt_accepted`` 0) only
    raises the damping: it is not evidence of convergence, so it does not count in the
    window (synth_bn small, ``hf_sampled``: five rejections in a row at CE 1.313 ended a run
    whose baseline went on to 1.306).  With a time budget of 0 every run ends at its own
    convergence, which is where optimizers are compared."""

    enabled: bool = True
    window: int = 5  # HF iterations that took a step, or epochs
    max_rejected: int = 10  # HF iterations in a row without an accepted step: converged (damping x 1.5^10)
    # (L[k - window] - L[k]) / L[k - window] < rel_tol: converged.  0.05% over 5 (0.01% per
    # iteration): on synth_bn small, HF under 0.2% stopped at iteration 77, held-out CE 1.315,
    # test WER 28.31 (0.77 worse than SGD's 27.54, outside the paired CI) while still gaining
    # 0.04% per iteration; the same run continued under 0.05% stopped at 117, CE 1.306, test 27.97
    rel_tol: float = 0.0005


@dataclass
class TrainerConf:
    exp_dir: Optional[str] = None  # default: exp/dnn_<optim.name>
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    # MINIBATCH optimizers (SGD, Adam, KFAC, K-BFGS...)
    batch_size: int = 256
    max_epochs: int = 10
    newbob: NewbobConf = field(default_factory=NewbobConf)
    # without newbob (Adam, SOAP, KFAC...): final.pt holds the epoch of the lowest held-out CE,
    # not the last one (trainer.convergence stops only after `window` epochs without a gain, and
    # an overfitting run's last epochs are its worst: synth_bn small, SOAP's CE 1.108 at epoch 5,
    # 1.158 when it stopped at epoch 9).  Newbob rolls bad epochs back itself; HF only takes steps
    # that lower the held-out CE.  false: the last epoch.
    keep_lowest_heldout: bool = True
    # SAMPLED optimizers (Hessian-free family): one step = one HF iteration
    max_iters: int = 20
    convergence: ConvergenceConf = field(default_factory=ConvergenceConf)
    # non-finite loss / gradient / parameters: a minibatch epoch is rolled back to its start and
    # retried at half the learning rate (an HF step is rejected, lambda raised); this many in a
    # row stop training with an error
    max_nonfinite: int = 3
    # stop when this much training wall time is spent (0 = no limit)
    time_budget_s: float = 0.0
    eval_chunk: int = 8192
    tf32: bool = False  # CUDA matmuls in TF32 (every optimizer; HF's CG too)
    bf16: bool = False  # bfloat16 autocast of forward/backward (first-order optimizers only)
    resume: bool = True
    keep_checkpoints: int = 2
    features_on_device: str = "auto"  # auto | yes | no (stream minibatches from CPU memory)
    # torchrun runs (WORLD_SIZE > 1): auto = nccl when each local rank has a GPU, else gloo
    dist_backend: str = "auto"
    allow_world_size_change: bool = False  # resume a minibatch run with another world size


@dataclass
class DecodeConf:
    beam: float = 13.0
    lattice_beam: float = 8.0
    max_active: int = 7000
    acwt: float = 0.1
    prior_scale: float = 1.0
    acwt_sweep: list[float] = field(default_factory=lambda: [0.06, 0.08, 0.1, 0.12, 0.15])
    jobs: int = 0  # 0: all cores


@dataclass
class TrainConfig:
    data: DataConf = field(default_factory=DataConf)
    features: FeaturesConf = field(default_factory=FeaturesConf)
    model: DNNConfig = field(default_factory=DNNConfig)
    optim: OptimConf = field(default_factory=OptimConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    decode: DecodeConf = field(default_factory=DecodeConf)


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (group defaults validate against it)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, node in (
        ("data", DataConf), ("features", FeaturesConf), ("model", DNNConfig),
        ("optim", OptimConf), ("trainer", TrainerConf), ("decode", DecodeConf),
    ):  # fmt: skip
        cs.store(group=group, name=f"{group}_schema", node=node)


def default_conf_dir() -> Path:
    """The repository's ``conf/`` directory."""
    return Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: list[str] | None = None, config_dir: Optional[str] = None, config_name: str = "train"):
    """Compose a :class:`TrainConfig` from ``conf/`` plus command-line overrides.

    Override order: group defaults -> experiment file (``+experiment=...``) ->
    command line.  Unknown keys raise ``omegaconf.errors.ConfigCompositionException``.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    register_configs()
    cdir = str(Path(config_dir or default_conf_dir()).resolve())
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=cdir, version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides or []))
    OmegaConf.set_struct(cfg, True)
    type_optim_options(cfg)
    return cfg


def explain_override_error(exc: Exception, overrides: list[str], config_dir: Optional[str] = None):
    """A one-line :class:`~asr_hf.utils.errors.DataError` for Hydra's composition error
    ``exc``: an unknown key names the valid keys of its section (an optimizer's options by
    the registry's rule), an unknown config group option the configs there are."""
    import difflib
    import re

    from omegaconf import OmegaConf

    from asr_hf.optim.registry import check_optimizer_options
    from asr_hf.utils.errors import DataError

    text = " ".join(str(exc).split())
    fallback = DataError("config override", text)
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
        try:
            base = compose(rest, config_dir=config_dir)
        except Exception:
            return fallback
        parent, _, leaf = key.rpartition(".")
        if parent == "optim.options":
            value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key and "=" in o), None)
            try:
                check_optimizer_options(base.optim.name, {leaf: value})
            except DataError as err:
                return err
            return fallback
        node = OmegaConf.select(base, parent) if parent else base
        if not OmegaConf.is_dict(node):
            return fallback
        valid = sorted(str(k) for k in node.keys())
        hint = difflib.get_close_matches(leaf, valid, n=1)
        guess = f" (did you mean {hint[0]}?)" if hint else ""
        return DataError(key, f"unknown key{guess}; valid in {parent or 'the config'}: {', '.join(valid)}")
    missing = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    if missing:
        group, name = missing.groups()
        folder = Path(config_dir or default_conf_dir()) / group
        valid = sorted(f.stem for f in folder.glob("*.yaml") if not f.stem.endswith("_schema"))
        hint = difflib.get_close_matches(name, valid, n=1)
        guess = f" (did you mean {hint[0]}?)" if hint else ""
        return DataError(f"{group}={name}", f"no such config in {folder}{guess}; available: {', '.join(valid)}")
    return fallback


def type_optim_options(cfg) -> None:
    """Check ``cfg.optim.options`` against the registry (a one-line
    :class:`~asr_hf.utils.errors.DataError` naming the valid keys, or the expected type)
    and replace it, in place, by the optimizer's typed options filled with its defaults.

    Raises:
        DataError: unknown optimizer, unknown option or a value of the wrong type.
    """
    from omegaconf import OmegaConf, open_dict

    from asr_hf.optim.registry import check_optimizer_options, options_class

    options = OmegaConf.to_container(cfg.optim.options, resolve=True) or {}
    check_optimizer_options(cfg.optim.name, options)
    schema = options_class(cfg.optim.name)
    if schema is None:  # an optimizer registered without declared options
        return
    typed = OmegaConf.merge(OmegaConf.structured(schema), options)
    with open_dict(cfg.optim):
        cfg.optim.options = typed


def exp_dir_for(cfg) -> Path:
    return Path(cfg.trainer.exp_dir or f"exp/dnn_{cfg.optim.name}")
