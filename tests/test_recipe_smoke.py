"""End-to-end smoke test of the synthetic recipe on the tiny corpus.

Runs every stage of ``recipes/common/synth_recipe.sh`` (synthesis, lang + LM,
features, mono, tri1, tri2 = LDA+MLLT, tri3 = SAT, alignment with tri3, its fMLLR
features for the DNN, graphs, GMM decode, DNN training with SGD and
with L-BFGS-preconditioned sampled HF, DNN decode, report) in a temporary
directory with tiny systems, and checks that it ends in WER files and a
RESULTS.md; a second run must skip every finished stage.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "common" / "synth_recipe.sh"


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", str(RECIPE), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1500)


@pytest.mark.slow
def test_synth_bn_recipe_end_to_end(tmp_path):
    args = ["--style", "bn", "--size", "tiny", "--jobs", "2", "--mono-totgauss", "150", "--tri-leaves", "80",
            "--tri-totgauss", "300", "--tri2-leaves", "80", "--tri2-totgauss", "300", "--tri3-leaves", "80", "--tri3-totgauss", "300",
            "--optimizers", "sgd hf_lbfgs_sampled", "--model", "dnn_tiny", "--speed-perturb", "0.9,1.0,1.1",
            "--trainer", "cpu_demo", "--acwt-sweep-gmm", "0.08,0.12", "--acwt-sweep-dnn", "0.08,0.12",
            "--", "trainer.max_epochs=2", "trainer.max_iters=3", "trainer.time_budget_s=60"]
    res = _run(tmp_path, *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for sys_name in ("mono", "tri1", "tri2", "tri3", "dnn_sgd", "dnn_hf_lbfgs_sampled"):
        for s in ("dev", "test"):
            wer = json.loads((tmp_path / "exp" / sys_name / f"decode_{s}" / "wer.json").read_text())
            assert 0 <= wer["wer_percent"] <= 150 and wer["ref_words"] > 0, (sys_name, s, wer)
    results = (tmp_path / "RESULTS.md").read_text()
    assert "dnn_hf_lbfgs_sampled" in results and "tri2" in results
    # the DNNs train on the last GMM's alignments and its speaker-adapted features (Kaldi nnet1),
    # of the speed-perturbed training copies (Kaldi nnet3); the GMMs trained on the originals
    cmd = (tmp_path / "exp" / "dnn_sgd" / "command.txt").read_text()
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
    summary = json.loads((tmp_path / "exp" / "dnn_hf_lbfgs_sampled" / "train_summary.json").read_text())
    assert summary["optimizer"] == "hf_lbfgs_sampled" and summary["epochs_or_iters"] == 3
    # every stage is idempotent, with no skip logic in the recipe: each command skips its own
    # current output, so a re-run of stages 1-9 rewrites nothing
    kept = [tmp_path / p for p in ("data/lang/G.fst", "data/local/lm/lm.arpa", "exp/tri3/final.mdl",
                                   "exp/tri3/decode_test/wer.json", "exp/dnn_sgd/final.pt",
                                   "exp/dnn_sgd/loglikes_test.ark", "exp/dnn_sgd/decode_test/wer.json")]
    before = {p: p.stat().st_mtime_ns for p in kept}
    res = _run(tmp_path, *args[:-4], "--stage", "1", "--stop-stage", "9", *args[-4:])
    assert res.returncode == 0, res.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in kept} == before
    assert "skipped (--force redoes it)" in res.stderr and "holds a finished run of this config" in res.stderr
