"""Name -> optimizer factory registry, so configs select optimizers by name.

Usage::

    @register_optimizer("hf", kind=OptimizerKind.SAMPLED, data_parallel="reducer", options_from=(HFConfig,))
    def build_hf(model, loss_kind, *, reducer=None, **options): ...

    opt = build_optimizer("hf", model, LossKind.CROSS_ENTROPY, reducer=reducer, **options)

Each entry declares what the trainer needs to know about the optimizer (its kind, how it
runs data-parallel, whether bfloat16 autocast is safe, whether it follows the trainer's
newbob learning-rate schedule, whether it wants the bare ``nn.Sequential`` network) and
its options: :func:`optimizer_options` lists them (name, default, type) and
:func:`options_class` turns them into a dataclass, the typed schema of
``optim.options`` (:func:`asr_hf.nnet.config.compose`).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import enum
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from asr_hf.optim.base import LossKind, OptimizerKind, Reducer

Factory = Callable[..., Any]

#: How an optimizer runs data-parallel over torch.distributed:
#: ``"ddp"``: gradients averaged by DistributedDataParallel (first-order methods and the
#: gradient-statistics preconditioners of :mod:`asr_hf.optim.peers`, whose state is a
#: function of the averaged gradients and so stays identical on every rank);
#: ``"reducer"``: the optimizer takes a ``reducer=`` and does its own collectives (HF
#: family, approximated-Hessian SGD); ``"none"``: single process only (its curvature
#: statistics are rank-local, e.g. KFAC, K-BFGS).
DATA_PARALLEL_MODES = ("ddp", "reducer", "none")


@dataclass(frozen=True)
class RegisteredOptimizer:
    """One registered optimizer.

    Attributes:
        name: the registry (and ``optim.name``) name.
        kind: minibatch or sampled (:class:`~asr_hf.optim.base.OptimizerKind`).
        factory: ``factory(model, loss_kind, [reducer=...,] **options)``.
        help: one line for listings.
        data_parallel: one of :data:`DATA_PARALLEL_MODES`; ``"reducer"`` factories get
            ``reducer=`` from :func:`build_optimizer`.
        options_from: where a factory taking ``**options`` gets them from (dataclasses or
            callables whose keyword parameters are the options), so a misspelt option is
            caught by name.
        preset: options this name fixes before the user's (e.g. ``hf_diag``'s
            ``preconditioner="diagonal"``); they are also its schema's defaults.
        bf16_safe: the update needs only the gradient, so bfloat16 autocast of the
            forward/backward pass is safe (curvature statistics and CG need float32).
        newbob: driven by the trainer's newbob learning-rate schedule (Kaldi nnet1), not
            by ``trainer.convergence``.
        bare_net: wants the model's bare ``nn.Sequential`` (the sequential curvature fast
            path) with inputs normalised by the data source, instead of the full model.
    """

    name: str
    kind: OptimizerKind
    factory: Factory
    help: str
    data_parallel: str = "none"
    options_from: tuple[Any, ...] = ()
    preset: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    bf16_safe: bool = False
    newbob: bool = False
    bare_net: bool = False


#: keyword parameters that the trainer or the factory supply, never the user
INTERNAL_OPTIONS = frozenset({"self", "model", "loss_kind", "params", "reducer"})

_REGISTRY: dict[str, RegisteredOptimizer] = {}


def register_optimizer(
    name: str,
    kind: OptimizerKind,
    help: str = "",
    data_parallel: str = "none",
    options_from: Sequence[Any] = (),
    *,
    preset: Optional[Mapping[str, Any]] = None,
    bf16_safe: bool = False,
    newbob: bool = False,
    bare_net: bool = False,
) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(model, loss_kind, **options)`` under ``name``.

    The arguments are the fields of :class:`RegisteredOptimizer`.  A factory that takes
    ``**options`` names in ``options_from`` the dataclass(es) or callable(s) that consume
    them (e.g. ``HFConfig``), so :func:`optimizer_options` can list the valid keys.
    """
    if data_parallel not in DATA_PARALLEL_MODES:
        raise ValueError(f"data_parallel must be one of {DATA_PARALLEL_MODES}, got {data_parallel!r}")

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"optimizer {name!r} registered twice")
        doc = help or (factory.__doc__ or "").strip()
        _REGISTRY[name] = RegisteredOptimizer(
            name, kind, factory, doc, data_parallel, tuple(options_from), dict(preset or {}),
            bf16_safe=bf16_safe, newbob=newbob, bare_net=bare_net,
        )  # fmt: skip
        return factory

    return deco


def available_optimizers() -> dict[str, RegisteredOptimizer]:
    _load_builtin()
    return dict(_REGISTRY)


def optimizer_kind(name: str) -> OptimizerKind:
    return _lookup(name).kind


def optimizer_info(name: str) -> RegisteredOptimizer:
    """The registry entry (kind, data-parallel mode, help) of ``name``."""
    return _lookup(name)


def build_optimizer(
    name: str, model: torch.nn.Module, loss_kind: LossKind, *, reducer: Optional[Reducer] = None, **options: Any
) -> Any:
    """Build the optimizer registered as ``name`` for ``model``.

    Args:
        name: a registered name.
        model: the parameters to optimize (and, for curvature methods, the network).
        loss_kind: the output/loss pair.
        reducer: the data-parallel workers' collectives, handed to ``"reducer"``
            optimizers (``None``: one process); other optimizers take none.
        **options: the optimizer's options (over the entry's ``preset``).

    Raises:
        ValueError: a reducer over several workers for an optimizer that takes none.
    """
    entry = _lookup(name)
    kwargs = {**entry.preset, **options}
    if entry.data_parallel == "reducer":
        return entry.factory(model, LossKind(loss_kind), reducer=reducer, **kwargs)
    if reducer is not None and reducer.world_size > 1:
        raise ValueError(f"optimizer {name!r} does not reduce over workers itself (data_parallel={entry.data_parallel})")
    return entry.factory(model, LossKind(loss_kind), **kwargs)


@dataclass(frozen=True)
class OptionSpec:
    """One keyword option of a registered optimizer: its default and type annotation."""

    name: str
    default: Any = inspect.Parameter.empty
    annotation: Any = inspect.Parameter.empty


def optimizer_options(name: str) -> Optional[dict[str, OptionSpec]]:
    """The options ``build_optimizer(name, ...)`` accepts; ``None`` when its factory takes
    ``**options`` without declaring where they go (``options_from``), so none can be checked."""
    entry = _lookup(name)
    params = list(inspect.signature(entry.factory).parameters.values())[2:]  # after model, loss_kind
    specs = {p.name: OptionSpec(p.name, p.default, _hint(entry.factory, p)) for p in params
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}  # fmt: skip
    if any(p.kind == p.VAR_KEYWORD for p in params):
        if not entry.options_from:
            return None
        for source in entry.options_from:
            if dataclasses.is_dataclass(source):
                hints = _type_hints(source)
                for f in dataclasses.fields(source):
                    default = f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty
                    specs.setdefault(f.name, OptionSpec(f.name, default, hints.get(f.name, f.type)))
            else:
                for p in inspect.signature(source).parameters.values():
                    if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                        specs.setdefault(p.name, OptionSpec(p.name, p.default, _hint(source, p)))
    return {
        k: dataclasses.replace(v, default=entry.preset[k]) if k in entry.preset else v
        for k, v in specs.items()
        if k not in INTERNAL_OPTIONS
    }


def options_class(name: str) -> Optional[type]:
    """The options of ``name`` as a dataclass (``None`` where they are not declared): one
    field per :func:`optimizer_options` entry, defaults included (the entry's preset
    over the optimizer's own), typed so that OmegaConf can hold it.

    OmegaConf types: enums are plain strings holding the enum's value (OmegaConf would
    accept only member names; the registry's value check knows the values), sequences
    are lists; numbers (``float`` options) and annotations OmegaConf cannot hold
    (callables, unions of other types) are ``Any``, checked by
    :func:`check_optimizer_options` instead: OmegaConf would turn an integer ``0`` into
    ``0.0``, and the optimizers' own messages echo the value as the user wrote it.
    """
    specs = optimizer_options(name)
    if specs is None:
        return None
    fields = []
    for spec in specs.values():
        ann = _schema_type(spec.annotation, spec.default)
        default = spec.default
        if isinstance(default, enum.Enum):
            default = default.value
        if default is inspect.Parameter.empty:
            fields.append((spec.name, ann))
        elif isinstance(default, (list, tuple, dict)):
            fields.append((spec.name, ann, dataclasses.field(default_factory=_copier(default))))
        else:
            fields.append((spec.name, ann, dataclasses.field(default=default)))
    fields.sort(key=lambda f: len(f) == 2, reverse=True)  # required ones (none here) first
    camel = "".join(part.capitalize() for part in name.split("_"))
    cls = dataclasses.make_dataclass(f"{camel}Options", fields)
    cls.__doc__ = f"Options of optimizer {name!r} (derived from its registry entry)."
    cls.__module__ = __name__
    return cls


def _copier(value: Any) -> Callable[[], Any]:
    if isinstance(value, dict):
        return lambda: dict(value)
    return lambda: list(value)


_SCALARS = (bool, int, float, str)


def _schema_type(ann: Any, default: Any) -> Any:
    """An OmegaConf-compatible annotation for an option (see :func:`options_class`)."""
    if ann is inspect.Parameter.empty:
        ann = type(default) if type(default) in _SCALARS or isinstance(default, enum.Enum) else Any
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        optional = len(args) < len(typing.get_args(ann)) or default is None
        enums = [a for a in args if inspect.isclass(a) and issubclass(a, enum.Enum)]
        inner = _schema_type(enums[0] if enums else args[0], default) if len(args) == 1 or enums else Any
        return Optional[inner] if optional and inner is not Any else inner
    if inspect.isclass(ann) and issubclass(ann, enum.Enum):
        return Optional[str] if default is None else str
    if ann is float:
        return Any
    if ann in _SCALARS:
        return Optional[ann] if default is None else ann
    if origin in (list, tuple, collections.abc.Sequence, typing.Sequence) or ann in (list, tuple):
        args = typing.get_args(ann)
        item = _schema_type(args[0], None) if args and args[0] is not Ellipsis else Any
        item = typing.get_args(item)[0] if typing.get_origin(item) is typing.Union else item
        return Optional[list[item]] if default is None else list[item]
    return Any


def check_optimizer_options(name: str, options: dict[str, Any]) -> None:
    """Raise a one-line :class:`~asr_hf.utils.errors.DataError` for an unknown optimizer,
    an option ``name``'s factory does not take (naming the valid ones), or a value of the
    wrong type (a string for a number, a float for an integer, an unknown enum value)."""
    from asr_hf.utils.errors import DataError

    try:
        specs = optimizer_options(name)
    except KeyError:
        raise DataError("optim.name", f"unknown optimizer {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None
    if specs is None:
        return
    unknown = sorted(set(options) - set(specs))
    if unknown:
        hints = [m for k in unknown for m in difflib.get_close_matches(k, specs, n=1)]
        guess = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise DataError(
            "optim.options",
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for optimizer {name}{guess}; "
            f"valid: {', '.join(sorted(specs))}",
        )
    for key, value in options.items():
        problem = _type_problem(specs[key], value) if key in specs else None
        if problem:
            raise DataError("optim.options", f"{key}={value!r} for optimizer {name}: {problem}")
    # the value rules of dataclass configs (HFConfig's damping > 0, ...), before any data is
    # loaded: the dataclass is built from the preset and the options it owns
    entry = _lookup(name)
    for source in entry.options_from:
        if dataclasses.is_dataclass(source):
            own = {f.name for f in dataclasses.fields(source)}
            try:
                source(**{k: v for k, v in {**entry.preset, **options}.items() if k in own})
            except (ValueError, TypeError) as exc:
                raise DataError("optim.options", f"{' '.join(str(exc).split())} (optimizer {name})") from None


def _type_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # an annotation that does not resolve: fall back to the defaults
        return {}


def _hint(fn: Any, p: inspect.Parameter) -> Any:
    target = fn.__init__ if inspect.isclass(fn) else fn
    return _type_hints(target).get(p.name, p.annotation)


def _expected(spec: OptionSpec) -> Optional[tuple[set[type], Optional[type[enum.Enum]], bool]]:
    """(scalar types, enum type, None allowed) of an option, or None when not checkable."""
    ann = spec.annotation
    args = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
    none_ok = type(None) in args or spec.default is None
    scalars: set[type] = set()
    enum_type = None
    for a in args:
        if inspect.isclass(a) and issubclass(a, enum.Enum):
            enum_type = a
        elif a in (bool, int, float, str):
            scalars.add(a)
        elif a is not type(None):
            return None  # sequences, callables, ...: not checked here
    if not scalars and enum_type is None:  # no usable annotation: go by the default's type
        d = spec.default
        if isinstance(d, enum.Enum):
            enum_type = type(d)
        elif type(d) in (bool, int, float, str):
            scalars.add(type(d))
        else:
            return None
    return scalars, enum_type, none_ok


def _type_problem(spec: OptionSpec, value: Any) -> Optional[str]:
    exp = _expected(spec)
    if exp is None:
        return None
    scalars, enum_type, none_ok = exp
    if value is None:
        return None if none_ok else "a value is required"
    if enum_type is not None:
        values = [m.value for m in enum_type]
        if isinstance(value, enum_type) or value in values:
            return None
        if isinstance(value, str) or not scalars:
            return f"expected one of {', '.join(map(str, values))}"
    if isinstance(value, bool):
        return None if bool in scalars else f"expected {_type_words(scalars)}, got a boolean"
    if isinstance(value, int) and (int in scalars or float in scalars):
        return None
    if isinstance(value, float) and float in scalars:
        return None
    if isinstance(value, str) and str in scalars:
        return None
    return f"expected {_type_words(scalars)}"


def _type_words(scalars: set[type]) -> str:
    words = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if float in scalars:
        scalars = scalars - {int}
    return " or ".join(words[t] for t in (bool, int, float, str) if t in scalars) or "another type"


def _lookup(name: str) -> RegisteredOptimizer:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown optimizer {name!r}; known: {sorted(_REGISTRY)}") from None


def _load_builtin() -> None:
    # Importing the modules runs their @register_optimizer decorators.
    import importlib

    for module in (
        "asr_hf.optim.first_order", "asr_hf.optim.hf", "asr_hf.optim.kfac", "asr_hf.optim.kbfgs", "asr_hf.optim.ahsgd",
        "asr_hf.optim.peers",
    ):  # fmt: skip
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
