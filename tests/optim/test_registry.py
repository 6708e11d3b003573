"""Option checking of registered optimizers: valid keys come from the factory's signature
or, for ``**options`` factories, from what they declare in ``options_from``."""

import pytest

from asr_hf.optim.base import OptimizerKind
from asr_hf.optim.hf import HFConfig
from asr_hf.optim.registry import (
    _REGISTRY,
    available_optimizers,
    build_optimizer,
    check_optimizer_options,
    optimizer_info,
    optimizer_options,
    options_class,
    register_optimizer,
)
from asr_hf.utils.errors import DataError


def test_valid_keys_follow_the_factories():
    assert set(optimizer_options("hf_lbfgs")) == set(HFConfig.__dataclass_fields__)
    assert set(optimizer_options("sgd")) == {"lr", "momentum", "dampening", "nesterov", "weight_decay"}
    kbfgs_l = set(optimizer_options("kbfgs_l"))
    assert {"memory", "initial_scale"} <= kbfgs_l and set(optimizer_options("kbfgs")) < kbfgs_l
    assert "reducer" not in optimizer_options("ahsgd") and "params" not in optimizer_options("ahsgd")


def test_values_are_checked_against_annotations():
    check_optimizer_options("hf", {"grad_max_size": None, "initial_damping": 1, "curvature": "hessian", "blocks": [["a*"]]})
    check_optimizer_options("kbfgs_l", {"initial_scale": None, "lm_damping": "additive", "memory": 5})
    with pytest.raises(DataError, match=r"^optim.options: nesterov=1 for optimizer sgd: expected true/false$"):
        check_optimizer_options("sgd", {"nesterov": 1})
    with pytest.raises(DataError, match=r"^optim.options: lm_damping='powel' for optimizer kbfgs: expected one of"):
        check_optimizer_options("kbfgs", {"lm_damping": "powel"})
    with pytest.raises(DataError, match=r"^optim.options: unknown options a, b for optimizer adam; valid: amsgrad,"):
        check_optimizer_options("adam", {"a": 1, "b": 2})


def test_options_classes_are_typed_schemas_with_the_defaults():
    import dataclasses

    from omegaconf import OmegaConf

    for name in available_optimizers():
        cls = options_class(name)
        specs = optimizer_options(name)
        assert [f.name for f in dataclasses.fields(cls)] == list(specs), name
        node = OmegaConf.structured(cls)  # OmegaConf can hold every field
        opts = OmegaConf.to_container(node)
        check_optimizer_options(name, opts)  # the defaults pass the value check
        for key, spec in specs.items():
            default = spec.default.value if hasattr(spec.default, "value") else spec.default
            assert opts[key] == (list(default) if isinstance(default, tuple) else default), (name, key)
    hf_diag = OmegaConf.structured(options_class("hf_diag"))
    assert hf_diag.preconditioner == "diagonal" and OmegaConf.structured(options_class("hf")).preconditioner == "none"
    assert OmegaConf.structured(options_class("ahsgd")).lr == 0.1


def test_capabilities_are_declared_in_the_registry():
    info = available_optimizers()
    assert {n for n, e in info.items() if e.newbob} == {"sgd"}
    assert {n for n, e in info.items() if e.bare_net} == {n for n in info if n.startswith("hf")}
    assert {n for n, e in info.items() if e.bf16_safe} == {"sgd", "adam", "adamw", "rmsprop", "ahsgd", "soap",
                                                            "shampoo", "psgd"}  # fmt: skip
    assert optimizer_info("hf_diag").preset == {"preconditioner": "diagonal"}


def test_the_reducer_is_an_argument_not_an_option():
    import torch

    from asr_hf.optim.base import LossKind

    class Two:
        world_size, rank = 2, 0

    model = torch.nn.Linear(3, 2)
    with pytest.raises(DataError, match="unknown option reducer for optimizer hf"):
        check_optimizer_options("hf", {"reducer": None})
    with pytest.raises(ValueError, match="does not reduce over workers"):
        build_optimizer("sgd", model, LossKind.CROSS_ENTROPY, reducer=Two())
    assert build_optimizer("hf", model, LossKind.CROSS_ENTROPY, reducer=Two()).reducer.world_size == 2


def test_an_undeclared_options_factory_is_not_checked():
    @register_optimizer("_open_ended_test", kind=OptimizerKind.MINIBATCH)
    def build(model, loss_kind, **options):
        return None

    try:
        assert optimizer_options("_open_ended_test") is None
        check_optimizer_options("_open_ended_test", {"anything": "goes"})
    finally:
        del _REGISTRY["_open_ended_test"]
