"""Option checking of registered optimizers: valid keys come from the factory's signature
or, for ``**options`` factories, from what they declare in ``options_from``."""

import pytest

from asr_hf.optim.base import OptimizerKind
from asr_hf.optim.hf import HFConfig
from asr_hf.optim.registry import _REGISTRY, check_optimizer_options, optimizer_options, register_optimizer
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


def test_an_undeclared_options_factory_is_not_checked():
    @register_optimizer("_open_ended_test", kind=OptimizerKind.MINIBATCH)
    def build(model, loss_kind, **options):
        return None

    try:
        assert optimizer_options("_open_ended_test") is None
        check_optimizer_options("_open_ended_test", {"anything": "goes"})
    finally:
        del _REGISTRY["_open_ended_test"]
