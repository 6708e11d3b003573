"""Training guards: non-finite steps, newbob on NaN, strict JSON outputs, no final.pt from
non-finite weights, refused resumes, and train_log.jsonl agreeing with the checkpoint."""

import csv
import itertools
import json
import math
from types import SimpleNamespace

import pytest
import torch

from asr_hf.nnet.config import NewbobConf, compose
from asr_hf.nnet.checkpoint import TrainState
from asr_hf.nnet.trainer import Trainer
from asr_hf.utils.errors import DataError


def _cfg(root, name, *extra):
    return compose(["model=dnn_tiny", "trainer.device=cpu", f"trainer.exp_dir={root}/exp/{name}", *extra])


def _strict_rows(path):
    """Rows of a JSON-lines file, refusing NaN/Infinity (not JSON)."""

    def no_constants(c):
        raise ValueError(f"{path}: {c} is not JSON")

    return [json.loads(line, parse_constant=no_constants) for line in path.read_text().splitlines()]


def test_sgd_divergence_stops_after_max_nonfinite_halvings(recipe_root):
    exp = recipe_root / "exp" / "diverge"
    t = Trainer(_cfg(recipe_root, "diverge", "optim=sgd", "optim.options.lr=1e38", "trainer.max_epochs=2",
                     "trainer.batch_size=64"), root=recipe_root)  # fmt: skip
    with pytest.raises(DataError) as err:
        t.train()
    assert str(err.value) == (
        f"{exp}: training diverged with sgd: non-finite parameters at epoch 1 step 1 on 3 consecutive attempts "
        "(learning rate halved 2 times, to 2.5e+37); lower optim.options.lr or raise trainer.max_nonfinite"
    )
    assert not (exp / "final.pt").exists() and not (exp / "train_summary.json").exists()
    assert not list((exp / "checkpoints").glob("*.pt"))  # no epoch completed
    assert [r["index"] for r in _strict_rows(exp / "train_log.jsonl")] == [0]
    assert all(bool(v.isfinite().all()) for v in t.model.state_dict().values())  # rolled back


def test_one_nonfinite_minibatch_rolls_back_the_epoch_and_halves_lr(recipe_root):
    exp = recipe_root / "exp" / "nan_once"
    t = Trainer(_cfg(recipe_root, "nan_once", "optim=adam", "trainer.max_epochs=2", "trainer.batch_size=64"),
                root=recipe_root)  # fmt: skip
    lr0 = t.optimizer.param_groups[0]["lr"]
    calls, real = itertools.count(1), t._closure_for
    t._closure_for = lambda x, y: real(x * float("nan") if next(calls) == 3 else x, y)  # one poisoned minibatch
    summary = t.train()
    assert t.state.epoch == 2 and t.state.lr_scale == 0.5 and t.state.nonfinite_failures == 0
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(lr0 / 2)
    rows = _strict_rows(exp / "train_log.jsonl")
    assert [r["index"] for r in rows] == [0, 1, 2] and rows[-1]["heldout_loss"] < rows[0]["heldout_loss"]
    assert math.isfinite(summary["heldout_loss"])
    assert all(bool(v.isfinite().all()) for v in torch.load(exp / "final.pt", weights_only=False)["model"].values())


def test_hf_rejects_nonfinite_steps_then_stops(recipe_root):
    """Non-finite inputs (here the normalisation): every HF step is rejected with the
    parameters unchanged and lambda raised; max_nonfinite in a row stop; the log's NaN
    held-out losses are JSON nulls."""
    exp = recipe_root / "exp" / "hf_nan"
    t = Trainer(_cfg(recipe_root, "hf_nan", "optim=hf", "optim.options.cg_max_iters=5", "trainer.max_iters=5",
                     "trainer.max_nonfinite=2"), root=recipe_root)  # fmt: skip
    t.model.norm.mean.fill_(float("nan"))
    before = {k: v.clone() for k, v in t.model.net.state_dict().items()}
    with pytest.raises(DataError) as err:
        t.train()
    assert str(err.value) == (
        f"{exp}: training diverged with hf: non-finite loss at iteration 2 on 2 consecutive iterations "
        "(steps rejected, damping raised to 0.0225)"
    )
    for k, v in t.model.net.state_dict().items():
        assert torch.equal(v, before[k]), k
    rows = _strict_rows(exp / "train_log.jsonl")
    assert [r["index"] for r in rows] == [0, 1] and rows[0]["heldout_loss"] is None
    assert rows[1]["opt_accepted"] == 0.0 and rows[1]["opt_nonfinite"] == 1.0
    assert not (exp / "final.pt").exists()


def test_newbob_treats_nan_as_worse_than_anything():
    for criterion in ("accuracy", "loss"):
        loads = []
        stub = SimpleNamespace(
            cfg=SimpleNamespace(trainer=SimpleNamespace(newbob=NewbobConf(criterion=criterion, min_epochs=1))),
            state=TrainState(best_heldout=2.0, best_heldout_acc=0.40, epoch=1),
            model=SimpleNamespace(load_state_dict=lambda sd: loads.append(sd)),
            optimizer=SimpleNamespace(load_state_dict=lambda sd: loads.append(sd)),
            _evaluate=lambda: (2.0, 0.40),
            _set_lr_scale=lambda s: None,
        )
        # a NaN loss with an accuracy that looks better (argmax of NaN logits) is still rejected
        assert Trainer._newbob(stub, float("nan"), 0.45, ("m", "o")) == (2.0, 0.40), criterion
        assert loads == ["m", "o"] and stub.state.lr_scale == 0.5 and stub.state.best_heldout == 2.0
        # rejected again, now while halving: rolled back, and newbob stops (nnet1)
        assert Trainer._newbob(stub, 1.9, float("nan"), ("m", "o")) == (2.0, 0.40)
        assert stub.state.best_heldout_acc == 0.40 and stub.state.lr_scale == 0.5
        assert stub.state.done and stub.state.stop_reason == "newbob"


def test_final_pt_refused_for_nonfinite_weights_and_summary_is_strict_json(recipe_root):
    exp = recipe_root / "exp" / "outputs"
    t = Trainer(_cfg(recipe_root, "outputs", "optim=adam", "trainer.max_epochs=1"), root=recipe_root)
    t._log({"index": 0, "wall_s": 0.0, "heldout_loss": float("nan"), "heldout_acc": float("inf")})
    with torch.no_grad():
        t.model.net[0].weight[0, 0] = float("inf")
    with pytest.raises(DataError) as err:
        t.finish()
    assert str(err.value) == f"{exp}/final.pt: not written: non-finite weights in net.0.weight"
    assert not (exp / "final.pt").exists() and not (exp / "train_summary.json").exists()
    with torch.no_grad():
        t.model.net[0].weight[0, 0] = 0.0
    summary = t.finish()
    assert summary["heldout_loss"] is None and summary["heldout_acc"] is None
    saved = json.loads((exp / "train_summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert saved["heldout_loss"] is None and (exp / "final.pt").is_file()
    assert _strict_rows(exp / "train_log.jsonl")[0]["heldout_acc"] is None
    with open(exp / "train_log.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row == {"index": "0", "wall_s": "0.0", "heldout_loss": "", "heldout_acc": ""}  # null, not nan/inf


def test_resume_with_another_model_is_refused_before_anything_is_overwritten(recipe_root):
    exp = recipe_root / "exp" / "shape"
    Trainer(_cfg(recipe_root, "shape", "optim=sgd", "trainer.max_epochs=1"), root=recipe_root).train()
    config, command = (exp / "config.yaml").read_bytes(), (exp / "command.txt").read_bytes()
    with pytest.raises(DataError) as err:
        Trainer(_cfg(recipe_root, "shape", "optim=sgd", "trainer.max_epochs=2", "model.hidden_dim=16"),
                root=recipe_root, command="asr-hf train-am model.hidden_dim=16")  # fmt: skip
    assert str(err.value) == (
        f"{exp}/checkpoints/ckpt-0001.pt: checkpoint of a different model (net.0.weight: 32x200 in the checkpoint, "
        "16x200 in this run's {'context': 2, 'hidden_dim': 16, 'num_layers': 2, 'activation': 'sigmoid'}); "
        "train into another trainer.exp_dir, or set trainer.resume=false to start over"
    )
    with pytest.raises(DataError, match="checkpoint of optimizer sgd, this run uses adam"):
        Trainer(_cfg(recipe_root, "shape", "optim=adam", "trainer.max_epochs=2"), root=recipe_root)
    assert (exp / "config.yaml").read_bytes() == config and (exp / "command.txt").read_bytes() == command


def test_resume_after_a_crash_between_log_row_and_checkpoint(recipe_root):
    """The epoch-2 row reached train_log.jsonl, its checkpoint did not: the resumed run
    logs epoch 2 once (the checkpoint's history is the truth), and matches a clean run."""
    exp = recipe_root / "exp" / "crash"
    Trainer(_cfg(recipe_root, "crash", "optim=adam", "trainer.max_epochs=2"), root=recipe_root).train()
    (exp / "checkpoints" / "ckpt-0002.pt").unlink()  # killed after _log, before save_checkpoint
    assert [r["index"] for r in _strict_rows(exp / "train_log.jsonl")] == [0, 1, 2]
    resumed = Trainer(_cfg(recipe_root, "crash", "optim=adam", "trainer.max_epochs=3"), root=recipe_root)
    resumed.train()
    rows = _strict_rows(exp / "train_log.jsonl")
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows == json.loads(json.dumps(resumed.state.history))
    clean = Trainer(_cfg(recipe_root, "crash_ref", "optim=adam", "trainer.max_epochs=3"), root=recipe_root)
    clean.train()
    ref = _strict_rows(recipe_root / "exp" / "crash_ref" / "train_log.jsonl")
    assert [r["heldout_loss"] for r in rows] == [r["heldout_loss"] for r in ref]
