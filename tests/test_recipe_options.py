"""Recipe options: one source of truth per value (recipes/common/defaults.sh, synth_defaults.sh,
then each corpus's conf.sh), listed once each by ``run.sh --help`` with its current value."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = ("synth_bn", "synth_swb", "bn50", "swb300")


def _help(recipe: str, *args: str) -> dict[str, str]:
    res = subprocess.run(["bash", str(REPO / "recipes" / recipe / "run.sh"), *args, "--help"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    options: dict[str, str] = {}
    for line in res.stdout.splitlines()[1:]:
        m = re.match(r'^  --([a-z0-9-]+) "(.*?)"', line)
        assert m, line
        assert m.group(1) not in options, f"{recipe}: --{m.group(1)} listed twice"
        options[m.group(1)] = m.group(2)
    return options


@pytest.mark.parametrize("recipe", RECIPES)
def test_help_lists_every_option_once_with_its_current_value(recipe):
    options = _help(recipe)
    assert {"stage", "stop-stage", "optimizers", "model", "trainer", "tri-leaves", "data-conf"} <= set(options)
    assert _help(recipe, "--tri-leaves", "77")["tri-leaves"] == "77"


def test_corpus_values_override_the_shared_defaults():
    bn, swb, sbn, sswb = (_help(r) for r in ("bn50", "swb300", "synth_bn", "synth_swb"))
    assert (bn["tri-leaves"], swb["tri-leaves"], bn["model"], swb["model"]) == ("2200", "9300", "dnn_bn50", "dnn_swb300")
    assert (bn["sample-rate"], swb["sample-rate"], sbn["sample-rate"], sswb["sample-rate"]) == (
        "16000", "8000", "16000", "8000")  # fmt: skip
    assert sbn["model"] == sswb["model"] == "dnn_small" and sbn["dnn-feats"] == "gmm" and bn["dnn-feats"] == "fbank"
    assert (sbn["data-conf"], sswb["data-conf"]) == ("synth_bn", "synth_swb")


def test_no_value_is_defined_twice_in_one_layer():
    """A corpus file sets only what differs from the layers under it."""
    common = REPO / "recipes" / "common"
    layers = {"defaults": common / "defaults.sh", "synth": common / "synth_defaults.sh"}
    names = {k: set(re.findall(r"^([a-z_][a-z0-9_]*)=", p.read_text(), re.M)) for k, p in layers.items()}
    for corpus in RECIPES:
        text = (REPO / "recipes" / corpus / "conf.sh").read_text()
        lines = re.findall(r"^([a-z_][a-z0-9_]*)=(.*)$", text, re.M)
        assert len({n for n, _ in lines}) == len(lines), corpus
        if corpus.startswith("synth"):
            assert not {n for n, _ in lines} & names["synth"], corpus


def test_unknown_option_is_one_line_error():
    res = subprocess.run(["bash", str(REPO / "recipes" / "synth_bn" / "run.sh"), "--tri-leafs", "5"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 1 and "unknown option --tri-leafs" in res.stderr


@pytest.mark.parametrize("script", sorted(p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.sh")))
def test_recipe_scripts_parse(script):
    """``bash -n``: a quoting slip in a sourced file otherwise only shows when that stage runs."""
    res = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def _dnn_names(*assignments: str) -> subprocess.CompletedProcess:
    """``dnn_name`` of recipes/common/pipeline.sh for seed 0 and seed 2 under the given options."""
    import os
    import sys

    script = "; ".join(("gmm_systems='mono tri3'", "dnn_feats=gmm", *assignments, ". recipes/common/pipeline.sh",
                        'echo "$(dnn_name sgd 0) $(dnn_name hf 2)"'))  # fmt: skip
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_dnn_exp_names_carry_the_data_and_the_tag_so_nothing_is_overwritten():
    assert _dnn_names().stdout.split() == ["dnn_sgd", "dnn_hf_s2"]
    assert _dnn_names("speed_perturb=0.9,1.1").stdout.split() == ["dnn_sgd_sp", "dnn_hf_sp_s2"]
    assert _dnn_names("speed_perturb=0.9,1.1", "dnn_tag=4x512_relu").stdout.split() == [
        "dnn_sgd_sp_4x512_relu", "dnn_hf_sp_4x512_relu_s2"]  # fmt: skip
    assert _dnn_names("dnn_tag=relu").stdout.split() == ["dnn_sgd_relu", "dnn_hf_relu_s2"]
    # a tag that would read as a seed (asr-hf speedup pairs runs by their _s<k>) or is no file name
    for bad in ("x_s3", "s3", "-a", "a/b"):
        res = _dnn_names(f"dnn_tag='{bad}'")
        assert res.returncode == 1 and f"--dnn-tag '{bad}'" in res.stderr and not res.stdout, (bad, res.stderr)
