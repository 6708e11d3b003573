"""Trainer, data path and config tests on the tiny corpus with learnable stand-in
targets (the ``recipe_root`` fixture in conftest.py)."""

import itertools
import json

import numpy as np
import pytest
import torch
from lhotse import CutSet

from asr_hf.nnet.config import compose
from asr_hf.nnet.data import FrameSet, Utterances, log_priors, split_heldout
from asr_hf.nnet.inference import forward_loglikes, load_model
from asr_hf.nnet.trainer import Trainer


def _cfg(root, *extra):
    return compose(["model=dnn_tiny", f"trainer.exp_dir={root}/exp/x", "trainer.device=cpu", *extra])


def test_splice_matches_explicit_loop():
    lengths = np.array([3, 5])
    feats = np.arange(16, dtype=np.float32).reshape(8, 2)
    fs = FrameSet(Utterances(["a", "b"], feats, np.zeros(8, np.int64), lengths), context=2)
    x = fs.splice(torch.arange(8)).numpy()
    for i in range(8):
        lo, hi = (0, 3) if i < 3 else (3, 8)
        rows = [feats[min(max(i + o, lo), hi - 1)] for o in range(-2, 3)]
        np.testing.assert_array_equal(x[i], np.concatenate(rows))


def test_heldout_split_is_by_utterance():
    u = Utterances([f"u{i}" for i in range(10)], np.zeros((55, 3), np.float32), np.arange(55),
                   np.arange(1, 11))
    tr, he = split_heldout(u, 0.2, seed=0)
    assert len(he.ids) == 2 and not set(tr.ids) & set(he.ids)
    assert tr.num_frames + he.num_frames == 55
    assert sorted(np.concatenate([tr.targets, he.targets]).tolist()) == list(range(55))


def test_heldout_split_keeps_speed_perturbed_copies_with_their_source():
    """A held-out utterance's sp0.9-/sp1.1- copies are never trained on (they are the same
    sentence by the same voice), and without copies the split is the ungrouped one."""
    from asr_hf.data.cuts import perturbation_source
    from asr_hf.nnet.data import heldout_split_indices

    base = [f"spk{i % 7}-utt{i}" for i in range(40)]
    ids = [f"{p}{u}" for p in ("", "sp0.9-", "sp1.1-") for u in base]
    assert perturbation_source("sp0.9-spk1-utt3") == "spk1-utt3" == perturbation_source("spk1-utt3")
    assert perturbation_source("sp1-spk1-utt3") == "spk1-utt3" and perturbation_source("spx-a") == "spx-a"
    u = Utterances(ids, np.zeros((120, 2), np.float32), np.zeros(120, np.int64), np.ones(120, np.int64))
    tr, he = split_heldout(u, 0.1, seed=3)
    held_src = {perturbation_source(i) for i in he.ids}
    assert len(held_src) == 4 and len(he.ids) == 12  # 10% of the 40 sources, each with its 3 versions
    assert not held_src & {perturbation_source(i) for i in tr.ids}
    for seed in range(5):
        assert heldout_split_indices(40, 0.2, seed, groups=base) == heldout_split_indices(40, 0.2, seed)


def test_log_priors_disable_unseen():
    pri = log_priors(np.array([1, 3, 0]))
    np.testing.assert_allclose(pri[:2], np.log([0.25, 0.75]))
    assert pri[2] > 50  # unseen pdf: pseudo-likelihood pushed to -inf


def test_config_rejects_typo(tmp_path):
    with pytest.raises(Exception, match="max_epoch"):
        compose(["trainer.max_epoch=3"])
    with pytest.raises(Exception):
        compose(["optim=no_such_optimizer"])


@pytest.mark.slow
@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_training_reduces_heldout_loss(recipe_root, optim):
    cfg = _cfg(recipe_root, f"optim={optim}", "trainer.max_epochs=3",
               f"trainer.exp_dir={recipe_root}/exp/dnn_{optim}")
    summary = Trainer(cfg, root=recipe_root).train()
    exp = recipe_root / "exp" / f"dnn_{optim}"
    rows = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    assert rows[-1]["heldout_loss"] < rows[0]["heldout_loss"] - 0.1
    assert summary["heldout_acc"] > 0.4
    for name in ("config.yaml", "command.txt", "final.pt", "train_summary.json", "train_log.csv",
                 "heldout_vs_time.png"):
        assert (exp / name).is_file(), name


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted(recipe_root):
    full = Trainer(_cfg(recipe_root, "optim=sgd", "trainer.max_epochs=3",
                        f"trainer.exp_dir={recipe_root}/exp/full"), root=recipe_root)
    full.train()
    part = Trainer(_cfg(recipe_root, "optim=sgd", "trainer.max_epochs=2",
                        f"trainer.exp_dir={recipe_root}/exp/part"), root=recipe_root)
    part.train()  # "killed" after the epoch-2 checkpoint
    resumed = Trainer(_cfg(recipe_root, "optim=sgd", "trainer.max_epochs=3",
                           f"trainer.exp_dir={recipe_root}/exp/part"), root=recipe_root)
    resumed.train()
    for (n, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)
    assert resumed.state.epoch == 3


@pytest.mark.slow
def test_pseudo_loglikes_shape_and_priors(recipe_root, tiny_corpus, num_pdfs):
    Trainer(_cfg(recipe_root, "optim=adam", "trainer.max_epochs=1",
                 f"trainer.exp_dir={recipe_root}/exp/fwd"), root=recipe_root).train()
    model, pri = load_model(recipe_root / "exp" / "fwd" / "final.pt")
    cuts = CutSet.from_file(tiny_corpus.fbank_cuts("dev"))
    uid, mat = next(iter(forward_loglikes(model, cuts, pri)))
    cut = next(c for c in cuts if c.id == uid)
    assert mat.shape == (cut.num_frames, num_pdfs)
    post = mat + pri  # undo the prior division
    np.testing.assert_allclose(np.exp(post).sum(1), 1.0, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("optim", ["hf", "hf_lbfgs_sampled"])
def test_hf_training_and_resume(recipe_root, optim):
    over = [f"optim={optim}", "optim.options.cg_max_iters=15"]
    full = Trainer(_cfg(recipe_root, *over, "trainer.max_iters=3", f"trainer.exp_dir={recipe_root}/exp/{optim}_a"),
                   root=recipe_root)
    summary = full.train()
    rows = [json.loads(x) for x in (recipe_root / "exp" / f"{optim}_a" / "train_log.jsonl").read_text().splitlines()]
    assert rows[-1]["heldout_loss"] < rows[0]["heldout_loss"]
    assert summary["optimizer_kind"] == "sampled" and "opt_cg_iters" in "".join(rows[-1])
    Trainer(_cfg(recipe_root, *over, "trainer.max_iters=2", f"trainer.exp_dir={recipe_root}/exp/{optim}_b"),
            root=recipe_root).train()
    resumed = Trainer(_cfg(recipe_root, *over, "trainer.max_iters=3", f"trainer.exp_dir={recipe_root}/exp/{optim}_b"),
                      root=recipe_root)
    resumed.train()
    for (n, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)


@pytest.mark.slow
def test_converged_run_resumed_under_a_tighter_rule_trains_on(recipe_root):
    """A run stopped by trainer.convergence stays stopped when resumed under the same rule,
    and trains on (history kept) when resumed under a tighter one."""
    over = ["optim=hf", "optim.options.cg_max_iters=10", "trainer.max_iters=40", "trainer.convergence.window=1",
            f"trainer.exp_dir={recipe_root}/exp/conv_resume"]
    loose = Trainer(_cfg(recipe_root, *over, "trainer.convergence.rel_tol=0.5"), root=recipe_root)
    first = loose.train()
    assert first["stop_reason"] == "converged" and first["epochs_or_iters"] < 6
    same = Trainer(_cfg(recipe_root, *over, "trainer.convergence.rel_tol=0.5"), root=recipe_root)
    assert same.train()["epochs_or_iters"] == first["epochs_or_iters"]
    tight = Trainer(_cfg(recipe_root, *over, "trainer.max_iters=6", "trainer.convergence.rel_tol=1e-9"),
                    root=recipe_root)
    more = tight.train()
    assert more["epochs_or_iters"] == 6 and more["stop_reason"] == "max_iters"
    rows = [json.loads(x) for x in (recipe_root / "exp" / "conv_resume" / "train_log.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(7))  # the first run's rows, then the new ones


def test_bf16_autocast_trains_first_order_and_is_refused_for_curvature_methods(recipe_root):
    cfg = _cfg(recipe_root, "optim=sgd", "trainer.bf16=true", "trainer.max_epochs=2",
               f"trainer.exp_dir={recipe_root}/exp/bf16")
    summary = Trainer(cfg, root=recipe_root).train()
    rows = [json.loads(x) for x in (recipe_root / "exp" / "bf16" / "train_log.jsonl").read_text().splitlines()]
    assert rows[-1]["heldout_loss"] < rows[0]["heldout_loss"] - 0.1 and summary["heldout_acc"] > 0.3
    with pytest.raises(ValueError, match="bf16"):
        Trainer(_cfg(recipe_root, "optim=hf", "trainer.bf16=true"), root=recipe_root)


def test_time_budget_binds_within_a_long_epoch(recipe_root):
    """A tick clock (one second per reading) makes the cut deterministic: the trainer
    reads t=0 before the epoch, the epoch starts at t=1 and checks the budget every 8
    minibatches (t=2, 3, ...), so a 5 s budget stops after exactly 40 minibatches and the
    epoch ends at t=7, whatever the machine's speed."""
    ticks = itertools.count()
    t = Trainer(_cfg(recipe_root, "optim=adam", "trainer.batch_size=8", "trainer.max_epochs=5",
                     "trainer.time_budget_s=5", f"trainer.exp_dir={recipe_root}/exp/epoch_cut"),
                root=recipe_root, clock=lambda: float(next(ticks)))  # fmt: skip
    steps_per_epoch = len(t.train_set) // 8
    assert steps_per_epoch > 80  # the cut really falls inside the first epoch
    t.train()
    assert t.state.done and t.state.epoch == 1  # stopped inside the first epoch
    assert t.state.frames_seen == 40 * 8
    assert t.state.wall_s == 7.0


def test_newbob_on_frame_accuracy_rolls_back_halves_and_stops():
    from types import SimpleNamespace

    from asr_hf.nnet.config import NewbobConf
    from asr_hf.nnet.checkpoint import TrainState

    scales = []
    stub = SimpleNamespace(
        cfg=SimpleNamespace(trainer=SimpleNamespace(newbob=NewbobConf(min_epochs=1))),
        state=TrainState(best_heldout=2.0, best_heldout_acc=0.40, epoch=1),
        model=SimpleNamespace(load_state_dict=lambda sd: scales.append(("model", sd))),
        optimizer=SimpleNamespace(load_state_dict=lambda sd: scales.append(("opt", sd))),
        _evaluate=lambda: (2.0, 0.40),
        _set_lr_scale=lambda s: scales.append(s),
    )
    newbob = Trainer._newbob
    assert newbob(stub, 1.9, 0.43, ("m", "o")) == (1.9, 0.43)  # +3 points: accepted, no halving
    assert not stub.state.halving and stub.state.best_heldout_acc == 0.43
    # lower loss but no accuracy gain: rejected under the accuracy criterion, rolled back
    assert newbob(stub, 1.8, 0.43, ("m", "o")) == (2.0, 0.40)
    assert ("model", "m") in scales and stub.state.halving and stub.state.lr_scale == 0.5
    stub.state.best_heldout_acc = 0.43
    newbob(stub, 1.7, 0.4305, ("m", "o"))  # +0.05 points while halving: stop
    assert stub.state.done and stub.state.lr_scale == 0.25
    # an epoch rejected while halving stops too (it does not halve forever)
    stub.state.done, stub.state.best_heldout_acc = False, 0.4305
    assert newbob(stub, 1.6, 0.42, ("m2", "o2")) == (2.0, 0.40)
    assert stub.state.done and stub.state.stop_reason == "newbob" and stub.state.lr_scale == 0.25


def test_hf_convergence_rule_stops_on_a_plateau():
    from types import SimpleNamespace

    from asr_hf.nnet.config import ConvergenceConf
    from asr_hf.nnet.checkpoint import TrainState

    conv = ConvergenceConf(window=3, rel_tol=0.01)
    state = TrainState()
    stub = SimpleNamespace(cfg=SimpleNamespace(trainer=SimpleNamespace(convergence=conv)), state=state)
    converged = lambda: Trainer._converged(stub)  # noqa: E731
    for loss in (3.0, 2.0, 1.5, 1.4):
        state.history.append({"heldout_loss": loss})
    assert not converged()  # 3.0 -> 1.4 over 3 iterations
    for loss in (1.399, 1.398):
        state.history.append({"heldout_loss": loss})
        assert not converged()  # 2.0 -> 1.399 and 1.5 -> 1.398 still gain more than 1%
    state.history.append({"heldout_loss": 1.397})
    assert converged()  # 1.4 -> 1.397: 0.2% < 1% over 3 iterations
    conv.enabled = False
    assert not converged()


def test_rejected_hf_steps_are_not_convergence():
    from asr_hf.nnet.config import ConvergenceConf
    from asr_hf.nnet.schedule import converged

    conv = ConvergenceConf(window=3, rel_tol=0.01, max_rejected=4)
    hist = [{"heldout_loss": x} for x in (3.0, 2.0, 1.5)] + [{"heldout_loss": 1.4, "opt_accepted": 1.0}]
    hist += [{"heldout_loss": 1.4, "opt_accepted": 0.0}] * 3  # three rejections: lambda grows, CE unchanged
    assert not converged(hist, conv)  # under the old rule 1.4 -> 1.4 over 3 rows would have stopped
    hist.append({"heldout_loss": 1.39, "opt_accepted": 1.0})
    assert not converged(hist, conv)  # over the last 3 steps taken: 1.5 -> 1.39, 7%
    hist += [{"heldout_loss": 1.39, "opt_accepted": 0.0}] * 4
    assert converged(hist, conv)  # 4 rejections in a row: no acceptable step is left
    steps = [{"heldout_loss": 1.39 - 1e-4 * i, "opt_accepted": 1.0} for i in range(1, 4)]
    assert converged(hist[:8] + steps, conv)  # 1.39 -> 1.3897 over the last 3 steps taken: 0.02% < 1%


@pytest.mark.slow
def test_training_priors_equal_decode_priors_from_pdf_counts(recipe_root):
    """One priors rule: final.pt's log-priors (training) equal what decode-matrices
    --pdf-counts computes from the alignment stage's pdf counts."""
    from asr_hf.gmm.targets import read_pdf_counts
    from asr_hf.nnet.priors import priors_from_counts

    exp = recipe_root / "exp" / "priors"
    Trainer(_cfg(recipe_root, "optim=sgd", "trainer.max_epochs=1", f"trainer.exp_dir={exp}"), root=recipe_root).train()
    _, pri = load_model(exp / "final.pt")
    counts = read_pdf_counts(recipe_root / "exp" / "tri1" / "ali" / "pdf_counts_train.txt")
    np.testing.assert_array_equal(pri, priors_from_counts(counts))


@pytest.mark.slow
def test_final_model_is_the_lowest_heldout_epoch_without_newbob(recipe_root):
    """Adam (no newbob): final.pt holds the epoch of the lowest held-out loss, also across a
    resume; with trainer.keep_lowest_heldout=false, the last epoch."""
    script = {0: (3.0, 0.1), 1: (2.0, 0.2), 2: (1.0, 0.5), 3: (1.5, 0.4), 4: (1.8, 0.3)}

    def run(exp, epochs, *extra):
        tr = Trainer(_cfg(recipe_root, "optim=adam", f"trainer.max_epochs={epochs}", "trainer.convergence.window=10",
                          f"trainer.exp_dir={recipe_root}/exp/{exp}", *extra), root=recipe_root)
        weights = {}

        def scripted():  # held-out losses by epoch, and the weights each epoch ended with
            weights[tr.state.epoch] = {k: v.clone() for k, v in tr.model.state_dict().items()}
            return script[tr.state.epoch]

        tr._evaluate = scripted
        return tr, tr.train(), weights

    run("lowest", 3)  # stopped after epoch 3, then resumed to 4: the lowest epoch's weights survive the resume
    _, summary, _ = run("lowest", 4)
    final, _ = load_model(recipe_root / "exp" / "lowest" / "final.pt")
    assert summary["final_model_epoch"] == 2 and summary["heldout_loss"] == 1.0 and summary["epochs_or_iters"] == 4
    _, _, first_weights = run("last", 3, "trainer.keep_lowest_heldout=false")  # the same run, uninterrupted to 3
    for k, v in first_weights[2].items():
        torch.testing.assert_close(final.state_dict()[k], v, rtol=0, atol=0)
    assert not torch.equal(first_weights[2]["net.0.weight"], first_weights[3]["net.0.weight"])
    last = json.loads((recipe_root / "exp" / "last" / "train_summary.json").read_text())
    assert last["final_model_epoch"] == 3 and last["heldout_loss"] == 1.5
