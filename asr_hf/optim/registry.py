"""Name -> optimizer factory registry, so configs select optimizers by name.

Usage::

    @register_optimizer("hf", kind=OptimizerKind.SAMPLED)
    def build_hf(model, loss_kind, **cfg): ...

    opt = build_optimizer("hf", model, LossKind.CROSS_ENTROPY, **cfg)
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from asr_hf.optim.base import LossKind, OptimizerKind

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
    name: str
    kind: OptimizerKind
    factory: Factory
    help: str
    data_parallel: str = "none"
    #: where a factory taking ``**options`` gets them from (dataclasses or callables whose
    #: keyword parameters are the options), so a misspelt option is caught by name
    options_from: tuple[Any, ...] = ()


#: keyword parameters that the trainer or the factory supply, never the user
INTERNAL_OPTIONS = frozenset({"self", "model", "loss_kind", "params", "reducer"})

_REGISTRY: dict[str, RegisteredOptimizer] = {}


def register_optimizer(
    name: str, kind: OptimizerKind, help: str = "", data_parallel: str = "none", options_from: Sequence[Any] = ()
) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(model, loss_kind, **options)`` under ``name``.

    ``data_parallel`` is one of :data:`DATA_PARALLEL_MODES`.  A factory that takes
    ``**options`` names in ``options_from`` the dataclass(es) or callable(s) that consume
    them (e.g. ``HFConfig``), so :func:`optimizer_options` can list the valid keys.
    """
    if data_parallel not in DATA_PARALLEL_MODES:
        raise ValueError(f"data_parallel must be one of {DATA_PARALLEL_MODES}, got {data_parallel!r}")

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"optimizer {name!r} registered twice")
        doc = help or (factory.__doc__ or "").strip()
        _REGISTRY[name] = RegisteredOptimizer(name, kind, factory, doc, data_parallel, tuple(options_from))
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


def build_optimizer(name: str, model: torch.nn.Module, loss_kind: LossKind, **options: Any) -> Any:
    """Build the optimizer registered as ``name`` for ``model``."""
    return _lookup(name).factory(model, LossKind(loss_kind), **options)


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
    return {k: v for k, v in specs.items() if k not in INTERNAL_OPTIONS}


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
    unknown = sorted(set(options) - set(specs) - {"reducer"})
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
