"""End-to-end smoke test of the synthetic recipe on the tiny corpus.

Runs every stage of ``recipes/common/synth_recipe.sh`` (synthesis, lang + LM,
features, mono, tri1, tri2 = LDA+MLLT, tri3 = SAT, alignment with tri3, its fMLLR
features for the DNN, graphs, GMM decode, DNN training with SGD and
with L-BFGS-preconditioned sampled HF, DNN decode, report) in a temporary
directory with tiny systems, and checks that it ends in WER files and a
RESULTS.md; a second run must skip every finished stage.  Then the same recipe runs again
in a second directory with ``kill -9`` at a random point of every stage, each time rerun
from the killed stage as a user would, and must end with the uninterrupted run's models,
alignments and WERs.
"""

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "common" / "synth_recipe.sh"


def _env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RECIPE), *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=1500)


ARGS = ["--style", "bn", "--size", "tiny", "--jobs", "2", "--mono-totgauss", "150", "--tri-leaves", "80",
            "--tri-totgauss", "300", "--tri2-leaves", "80", "--tri2-totgauss", "300", "--tri3-leaves", "80", "--tri3-totgauss", "300",
            "--optimizers", "sgd hf_lbfgs_sampled", "--model", "dnn_tiny", "--speed-perturb", "0.9,1.0,1.1",
            "--trainer", "cpu_demo", "--acwt-sweep-gmm", "0.08,0.12", "--acwt-sweep-dnn", "0.08,0.12",
            "--", "trainer.max_epochs=2", "trainer.max_iters=3", "trainer.time_budget_s=600"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    d = tmp_path_factory.mktemp("reference")
    res = _run(d, *ARGS)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return d


@pytest.mark.slow
def test_synth_bn_recipe_end_to_end(reference):
    tmp_path, args = reference, ARGS
    for sys_name in ("mono", "tri1", "tri2", "tri3", "dnn_sgd_sp", "dnn_hf_lbfgs_sampled_sp"):
        for s in ("dev", "test"):
            wer = json.loads((tmp_path / "exp" / sys_name / f"decode_{s}" / "wer.json").read_text())
            assert 0 <= wer["wer_percent"] <= 150 and wer["ref_words"] > 0, (sys_name, s, wer)
    results = (tmp_path / "RESULTS.md").read_text()
    assert "dnn_hf_lbfgs_sampled_sp" in results and "tri2" in results
    # the DNNs train on the last GMM's alignments and its speaker-adapted features (Kaldi nnet1),
    # of the speed-perturbed training copies (Kaldi nnet3); the GMMs trained on the originals
    cmd = (tmp_path / "exp" / "dnn_sgd_sp" / "command.txt").read_text()
    assert "data.ali_dir=exp/tri3/ali_sp" in cmd and "data.feats_dir=data/gmmfeats_tri3_sp" in cmd, cmd
    from lhotse import CutSet

    def ids(path):
        return {c.id for c in CutSet.from_file(tmp_path / path)}

    originals = ids("data/mfcc/cuts_train.jsonl.gz")
    assert not any(i.startswith("sp") for i in originals)
    assert ids("data/gmmfeats_tri3_sp/cuts_train.jsonl.gz") == {f"{p}{i}" for i in originals for p in ("", "sp0.9-", "sp1.1-")}
    assert len(ids("exp/tri3/ali_sp/cuts_train.jsonl.gz")) >= 0.95 * 3 * len(originals)
    for s in ("dev", "test"):
        assert (tmp_path / "data" / "gmmfeats_tri3" / f"cuts_{s}.jsonl.gz").is_file(), s
    # the report carries the wall time of every stage and the held-out speakers of the best system
    for stage in range(0, 10):
        assert f"| {stage} | " in results.split("## Wall time per stage")[1], stage
    assert "## Held-out speakers (test, best system" in results
    summary = json.loads((tmp_path / "exp" / "dnn_hf_lbfgs_sampled_sp" / "train_summary.json").read_text())
    assert summary["optimizer"] == "hf_lbfgs_sampled" and summary["epochs_or_iters"] == 3
    # every stage is idempotent, with no skip logic in the recipe: each command skips its own
    # current output, so a re-run of stages 1-9 rewrites nothing
    kept = [tmp_path / p for p in ("data/lang/G.fst", "data/local/lm/lm.arpa", "exp/tri3/final.mdl",
                                   "exp/tri3/decode_test/wer.json", "exp/dnn_sgd_sp/final.pt",
                                   "exp/dnn_sgd_sp/loglikes_test.ark", "exp/dnn_sgd_sp/decode_test/wer.json")]
    before = {p: p.stat().st_mtime_ns for p in kept}
    res = _run(tmp_path, *args[:-4], "--stage", "1", "--stop-stage", "9", *args[-4:])
    assert res.returncode == 0, res.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in kept} == before
    assert "skipped (--force redoes it)" in res.stderr and "holds a finished run of this config" in res.stderr


# ---------------------------------------------------------------------------- kill -9 and rerun

_STAGE = re.compile(r"\) Stage (\d+):")


def _session(sid: int) -> dict[int, tuple[int, str]]:
    """The live processes of session ``sid``: ``{pid: (ppid, command line)}``."""
    procs = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
            if int(fields[3]) == sid and fields[0] != "Z":
                procs[int(d.name)] = (int(fields[1]), (d / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue
    return procs


def _kill_stage(p: subprocess.Popen, log: Path, stage: int, delay: float) -> int:
    """Wait until the recipe logs ``stage``, then ``delay`` seconds; kill -9 its running
    ``asr-hf`` command (the main process only: its pool workers must die with it) or, between
    commands, the whole recipe.  Returns the stage that was running when the kill landed."""
    while not any(int(m) == stage for m in _STAGE.findall(log.read_text())):
        assert p.poll() is None, f"the recipe ended before stage {stage}:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)
    time.sleep(delay)
    running = int(_STAGE.findall(log.read_text())[-1])
    procs = _session(p.pid)
    main = [pid for pid, (ppid, cmd) in procs.items()
            if "asr-hf" in cmd and "asr-hf" not in procs.get(ppid, (0, ""))[1]]
    for pid in main or [p.pid]:
        os.kill(pid, signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode != 0, "a killed stage must fail the recipe"
    # nothing of the killed command survives it (pool workers die with their parent); a
    # synthesizer child finishing its sentence gets a few seconds
    deadline = time.time() + 20
    while _session(p.pid) and time.time() < deadline:
        time.sleep(0.2)
    left = _session(p.pid)
    if left:
        os.killpg(p.pid, signal.SIGKILL)
    assert not left, f"processes outlived the killed stage {running}: {left}"
    return running


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_kill_9_in_every_stage_then_rerun_gives_the_uninterrupted_result(reference, tmp_path):
    times = {}
    for line in (reference / "exp" / "stage_times.tsv").read_text().splitlines():
        t0, t1, st = line.split("\t")[:3]
        times[int(st)] = max(int(t1) - int(t0), 1)
    rng = random.Random(0)
    killed, stage = [], 0
    while stage <= 10:
        log = tmp_path / f"killed{len(killed)}.log"
        with log.open("w") as f:
            p = subprocess.Popen(["bash", str(RECIPE), *ARGS[:-4], "--stage", str(stage), *ARGS[-4:]], cwd=tmp_path,
                                 env=_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        # a random point in the first 30% of the stage's reference duration, so that a rerun
        # under lighter load (up to ~3x faster) still ends inside the stage (a one-second stage
        # is mostly interpreter start-up, so its kill lands early)
        at = _kill_stage(p, log, stage, rng.uniform(0.02, 0.3) * times[stage])
        killed.append(at)
        # rerun from the killed stage as a user would (run.sh --stage N), with no hand work
        res = _run(tmp_path, *ARGS[:-4], "--stage", str(at), "--stop-stage", str(at), *ARGS[-4:])
        assert res.returncode == 0, f"rerun of the killed stage {at}: " + res.stdout[-2000:] + res.stderr[-2000:]
        stage = at + 1
    assert killed == list(range(11)), f"a stage ended before its kill landed: killed in stages {killed}"
    # the same corpus, models, alignments, DNN weights and WERs as the uninterrupted run
    import torch

    from lhotse import CutSet

    for split in ("train", "dev", "test"):  # the manifests name their own directory's audio
        a, b = (sorted((c.id, c.duration, c.supervisions[0].text) for c in
                       CutSet.from_file(d / "data" / "corpus" / "manifests" / f"cuts_{split}.jsonl.gz"))
                for d in (tmp_path, reference))
        assert a == b, split
    for rel in ("data/local/lm/lm.arpa", *(f"exp/{s}/final.mdl" for s in ("mono", "tri1", "tri2", "tri3"))):
        assert _digest(tmp_path / rel) == _digest(reference / rel), rel
    a, b = (np.load(d / "exp" / "tri3" / "ali_sp" / "ali_train.npz") for d in (tmp_path, reference))
    assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in b.files)
    for name in ("dnn_sgd_sp", "dnn_hf_lbfgs_sampled_sp"):
        a, b = (torch.load(d / "exp" / name / "final.pt", map_location="cpu", weights_only=False) for d in
                (tmp_path, reference))
        for k, v in b["model"].items():
            assert torch.equal(a["model"][k], v), (name, k)
    for name in ("mono", "tri1", "tri2", "tri3", "dnn_sgd_sp", "dnn_hf_lbfgs_sampled_sp"):
        for s in ("dev", "test"):
            a, b = (json.loads((d / "exp" / name / f"decode_{s}" / "wer.json").read_text()) for d in
                    (tmp_path, reference))
            assert (a["wer_percent"], a["ref_words"]) == (b["wer_percent"], b["ref_words"]), (name, s)
    assert (tmp_path / "RESULTS.md").is_file()
