"""asr-hf dump-gmm-feats refuses existing features that another run of the system made,
or that are older than the system's model (the coverage of SAT transforms: test_sat_tiny.py)."""

import json
import os

import pytest

from asr_hf.cli import main
from asr_hf.gmm.mono import MonoConfig, train_mono

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mono(tiny_corpus, tmp_path_factory):
    exp = tmp_path_factory.mktemp("dump_stale") / "mono"
    cfg = MonoConfig(num_iters=2, max_iter_inc=1, totgauss=150, realign_iters=(1,), jobs=2)
    train_mono(tiny_corpus.lang_dir, tiny_corpus.mfcc_cuts("train"), exp, cfg)
    return exp


def _dump(mono, tiny_corpus, out, capsys):
    capsys.readouterr()
    rc = main(["dump-gmm-feats", str(mono), str(tiny_corpus.mfcc_cuts("train")), "--out", str(out), "--split", "train"])
    return rc, capsys.readouterr().err.strip()


def test_features_of_another_run_or_older_than_the_model_are_refused(mono, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "gmmfeats"
    assert _dump(mono, tiny_corpus, out, capsys) == (0, "")
    target = out / "cuts_train.jsonl.gz"
    made = json.loads((out / "gmm_source_train.json").read_text())["sources"]
    assert str((mono / "final.mdl").resolve()) in made
    assert _dump(mono, tiny_corpus, out, capsys) == (0, "")  # same system: reused
    fix = f"remove {out.resolve()} (or dump into another --out) to recompute"

    # the model is touched after the dump (retrained with identical bytes): newer
    mdl = mono / "final.mdl"
    later = target.stat().st_mtime_ns + 10**9
    os.utime(mdl, ns=(later, later))
    rc, err = _dump(mono, tiny_corpus, out, capsys)
    assert rc == 2 and err == (
        f"asr-hf dump-gmm-feats: error: {target.resolve()}: stale: {mdl.resolve()} is newer than these features; {fix}"
    )

    # another run's model (different bytes), even if older than the features
    original = mdl.read_bytes()
    mdl.write_bytes(original + b" ")
    earlier = target.stat().st_mtime_ns - 10**9
    os.utime(mdl, ns=(earlier, earlier))
    rc, err = _dump(mono, tiny_corpus, out, capsys)
    assert rc == 2 and err == (
        f"asr-hf dump-gmm-feats: error: {target.resolve()}: stale: made from another final.mdl (a different run); {fix}"
    )
    mdl.write_bytes(original)
    os.utime(mdl, ns=(earlier, earlier))
    assert _dump(mono, tiny_corpus, out, capsys) == (0, "")

    # features without a provenance record (made before it existed) are not trusted either
    (out / "gmm_source_train.json").unlink()
    rc, err = _dump(mono, tiny_corpus, out, capsys)
    assert rc == 2 and err == (
        f"asr-hf dump-gmm-feats: error: {target.resolve()}: stale: no record of the system files it was made from "
        f"(gmm_source_train.json); {fix}"
    )
