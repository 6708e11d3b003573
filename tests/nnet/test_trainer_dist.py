"""The acoustic-model trainer under torch.distributed: 2 gloo processes on this CPU.

One spawn runs every phase (process start-up dominates): a 2-process HF run that
stops after one iteration (one checkpoint), its resumption to two iterations, and a
data-parallel (DDP) SGD run.  The parent compares with single-process runs.
"""

import json
from pathlib import Path

import pytest
import torch

from asr_hf.nnet.config import compose
from asr_hf.nnet.trainer import Trainer
from asr_hf.optim.distributed import run_local_workers

pytestmark = pytest.mark.slow


def _overrides(exp, *extra):
    return ["model=dnn_tiny", "trainer.device=cpu", f"trainer.exp_dir={exp}", *extra]


# lambda 1 keeps float32 CG well conditioned, so summation-order differences between the
# sharded and the single-process run stay at rounding level (the float64 trajectory
# equality at small lambda is tests/optim/test_distributed.py's)
HF = ("optim=hf", "optim.options.cg_max_iters=15", "optim.options.initial_damping=1.0")
SGD = ("optim=sgd", "trainer.batch_size=128")
AHSGD = ("optim=ahsgd", "trainer.batch_size=128", "optim.options.sync_period=3")


def _phases_worker(rank, world, root, phases):
    torch.set_num_threads(1)
    for overrides in phases:
        if overrides[0] == "expect-error":  # record the refusal instead of failing the worker
            try:
                Trainer(compose(overrides[1:]), root=root)
            except ValueError as exc:
                (Path(root) / f"refusal{rank}.txt").write_text(str(exc))
            continue
        Trainer(compose(overrides), root=root).train()


def _rows(exp):
    return [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dist_runs(recipe_root):
    exp = recipe_root / "exp"
    phases = [
        _overrides(exp / "dist_hf", *HF, "trainer.max_iters=1"),
        _overrides(exp / "dist_hf_once", *HF, "trainer.max_iters=1"),  # kept as it was after one iteration
        _overrides(exp / "dist_hf", *HF, "trainer.max_iters=2"),  # resumes from iteration 1
        _overrides(exp / "dist_sgd", *SGD, "trainer.max_epochs=2"),
        ["expect-error", *_overrides(exp / "dist_kfac", "optim=kfac")],
        # ranks hold different parameters mid-round: the checkpoint carries every rank's state
        _overrides(exp / "dist_ahsgd", *AHSGD, "trainer.max_epochs=1", "trainer.newbob.enabled=false"),
        _overrides(exp / "dist_ahsgd", *AHSGD, "trainer.max_epochs=2", "trainer.newbob.enabled=false"),
        _overrides(exp / "dist_ahsgd_full", *AHSGD, "trainer.max_epochs=2", "trainer.newbob.enabled=false"),
    ]
    try:
        run_local_workers(_phases_worker, 2, str(recipe_root), phases)
    except torch.multiprocessing.ProcessExitedException as exc:
        # a rare native abort in a gloo worker ("terminate called without an active exception",
        # SIGABRT; seen once, in a fresh-clone suite run on 2026-12-07) is not what this tests:
        # one fresh attempt, from scratch
        if exc.signal_name != "SIGABRT":
            raise
        import shutil

        for d in exp.glob("dist_*"):
            shutil.rmtree(d)
        run_local_workers(_phases_worker, 2, str(recipe_root), phases)
    return exp


def test_two_process_hf_checkpoints_once_and_resumes(dist_runs, recipe_root):
    once = dist_runs / "dist_hf_once"
    assert sorted(p.name for p in (once / "checkpoints").iterdir()) == ["ckpt-0001.pt"]
    assert [r["index"] for r in _rows(once)] == [0, 1]  # rank 0 alone writes the log
    assert "world_size=2" in (once / "command.txt").read_text()
    resumed = dist_runs / "dist_hf"
    rows = _rows(resumed)
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[-1]["world_size"] == 2 and 0.0 <= rows[-1]["comm_share"] < 1.0
    # the resumed 2-process run equals a single-process run over the union of the shards
    single = Trainer(compose(_overrides(dist_runs / "single_hf", *HF, "trainer.max_iters=2")), root=recipe_root)
    single.train()
    dist_state = torch.load(resumed / "final.pt", weights_only=False)["model"]
    for name, want in single.model.state_dict().items():
        torch.testing.assert_close(dist_state[name], want, rtol=1e-3, atol=1e-4, msg=name)
    for a, b in zip(_rows(dist_runs / "single_hf"), rows):
        assert a["heldout_loss"] == pytest.approx(b["heldout_loss"], rel=1e-4)
    summary = json.loads((resumed / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["train_frames"] == len(single.train_source)


def test_hf_checkpoint_resumes_with_another_world_size(dist_runs, recipe_root):
    # HF samples are drawn over the global frame order: one process continues the 2-process run
    t = Trainer(compose(_overrides(dist_runs / "dist_hf", *HF, "trainer.max_iters=3")), root=recipe_root)
    t.train()
    assert [r["index"] for r in _rows(dist_runs / "dist_hf")] == [0, 1, 2, 3]


def test_ddp_sgd_trains_and_refuses_silent_world_size_change(dist_runs, recipe_root):
    rows = _rows(dist_runs / "dist_sgd")
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[-1]["heldout_loss"] < rows[0]["heldout_loss"] - 0.1
    with pytest.raises(ValueError, match="allow_world_size_change"):
        Trainer(compose(_overrides(dist_runs / "dist_sgd", *SGD, "trainer.max_epochs=3")), root=recipe_root).train()
    t = Trainer(compose(_overrides(dist_runs / "dist_sgd", *SGD, "trainer.max_epochs=3",
                                   "trainer.allow_world_size_change=true")), root=recipe_root)  # fmt: skip
    t.train()
    assert t.state.epoch == 3


def test_single_process_only_optimizers_refuse_a_world(dist_runs, recipe_root):
    for rank in range(2):
        msg = (recipe_root / f"refusal{rank}.txt").read_text()
        assert "kfac" in msg and "one process" in msg


def test_rank_local_optimizer_resumes_exactly_and_refuses_another_world_size(dist_runs, recipe_root):
    full = torch.load(dist_runs / "dist_ahsgd_full" / "final.pt", weights_only=False)["model"]
    resumed = torch.load(dist_runs / "dist_ahsgd" / "final.pt", weights_only=False)["model"]
    for name, want in full.items():
        assert torch.equal(resumed[name], want), name
    ckpt = torch.load(dist_runs / "dist_ahsgd" / "checkpoints" / "ckpt-0002.pt", weights_only=False)
    assert len(ckpt["rank_states"]) == 2
    rows = _rows(dist_runs / "dist_ahsgd")
    assert rows[-1]["heldout_loss"] < rows[0]["heldout_loss"]
    with pytest.raises(ValueError, match="per-rank state"):
        Trainer(compose(_overrides(dist_runs / "dist_ahsgd", *AHSGD, "trainer.max_epochs=3")),
                root=recipe_root).train()
