"""``asr-hf train-am`` option errors and ``asr-hf nnet-forward`` input errors: one line,
exit 2, and nothing written."""

import numpy as np
import pytest
import torch
from lhotse import CutSet

from asr_hf.cli import main
from asr_hf.nnet.config import compose, default_conf_dir
from asr_hf.nnet.model import DNN, DNNConfig
from asr_hf.optim.hf import HFConfig
from asr_hf.optim.registry import available_optimizers, check_optimizer_options


OPTIM_DIR = default_conf_dir() / "optim"


def _error_line(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim=hf", "+optim.options.cg_max_iter=5"],
         "optim.options: unknown option cg_max_iter for optimizer hf (did you mean cg_max_iters?); valid: "
         + ", ".join(sorted(HFConfig.__dataclass_fields__))),
        (["optim=sgd", "+optim.options.lrr=0.1"],
         "optim.options: unknown option lrr for optimizer sgd (did you mean lr?); valid: dampening, lr, momentum, "
         "nesterov, weight_decay"),
        (["optim.name=hff"], "optim.name: unknown optimizer 'hff'; registered: " + ", ".join(sorted(available_optimizers()))),
        # the same typos in the forms Hydra itself refuses: no "+", a config group option
        (["optim=hf", "optim.options.cg_max_iter=5"],
         "optim.options: unknown option cg_max_iter for optimizer hf (did you mean cg_max_iters?); valid: "
         + ", ".join(sorted(HFConfig.__dataclass_fields__))),
        (["trainer.max_iterz=3"],
         "trainer.max_iterz: unknown key (did you mean max_iters?); valid in trainer: "
         + ", ".join(sorted(compose([]).trainer.keys()))),
        (["optim=hff"], f"optim=hff: no such config in {OPTIM_DIR} (did you mean hf?); available: "
         + ", ".join(sorted(p.stem for p in OPTIM_DIR.glob("*.yaml") if not p.stem.endswith("_schema")))),
        (["optim=hf", "optim.options.initial_damping=abc"],
         "optim.options: initial_damping='abc' for optimizer hf: expected a number"),
        (["optim=hf", "optim.options.cg_max_iters=2.5"],
         "optim.options: cg_max_iters=2.5 for optimizer hf: expected an integer"),
        (["optim=kfac", "+optim.options.fisher=sampeld"],
         "optim.options: fisher='sampeld' for optimizer kfac: expected one of sampled, empirical"),
        (["optim=hf", "optim.options.initial_damping=0"],
         "optim.options: initial_damping must be > 0, got 0 (optimizer hf)"),
        (["optim=hf", "+optim.options.min_damping=1"],
         "optim.options: min_damping must be in [0, initial_damping=0.01], got 1 (optimizer hf)"),
        (["trainer.max_iters=0"], "trainer.max_iters: must be >= 1, got 0"),
        (["trainer.max_iters=-1"], "trainer.max_iters: must be >= 1, got -1"),
        (["trainer.max_epochs=0"], "trainer.max_epochs: must be >= 1, got 0"),
        (["trainer.max_nonfinite=0"], "trainer.max_nonfinite: must be >= 1, got 0"),
    ],
)
def test_train_am_option_errors_are_one_line(recipe_root, capsys, overrides, message):
    exp = recipe_root / "exp" / "bad_option"
    argv = ["train-am", "--root", str(recipe_root), "model=dnn_tiny", "trainer.device=cpu",
            f"trainer.exp_dir={exp}", *overrides]  # fmt: skip
    assert _error_line(capsys, argv) == f"asr-hf train-am: error: {message}"
    assert not exp.exists()


def test_option_values_are_checked_before_any_data_is_looked_for(tmp_path, capsys):
    """A root with no data at all: the bad value is the error, not the missing alignments."""
    argv = ["train-am", "--root", str(tmp_path), "model=dnn_tiny", "trainer.device=cpu", "optim=hf_lbfgs_sampled",
            "optim.options.initial_damping=0", f"trainer.exp_dir={tmp_path / 'exp'}"]
    assert _error_line(capsys, argv) == (
        "asr-hf train-am: error: optim.options: initial_damping must be > 0, got 0 (optimizer hf_lbfgs_sampled)")
    assert not (tmp_path / "exp").exists()


def test_every_shipped_optimizer_config_passes_the_option_check():
    from asr_hf.nnet.config import default_conf_dir
    from omegaconf import OmegaConf

    for path in sorted((default_conf_dir() / "optim").glob("*.yaml")):
        cfg = compose([f"optim={path.stem}"])
        check_optimizer_options(cfg.optim.name, OmegaConf.to_container(cfg.optim.options, resolve=True) or {})


def test_composed_optimizer_options_are_typed_and_hf_variants_share_one_base():
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ValidationError

    from asr_hf.optim.hf import HF_VARIANTS

    base = OmegaConf.to_container(compose(["optim=hf"]).optim.options)
    assert set(base) == set(HFConfig.__dataclass_fields__)
    for name, preset in HF_VARIANTS.items():
        cfg = compose([f"optim={name}", "++optim.options.seed=5"])
        opts = OmegaConf.to_container(cfg.optim.options)
        assert cfg.optim.name == name and opts == {**base, **preset, "seed": 5}, name
        assert (opts["initial_damping"], opts["cg_max_iters"], opts["chunk_size"]) == (0.01, 100, 8192)
    cfg = compose(["optim=kfac", "optim.options.lr=1"])
    assert cfg.optim.options.lr == 1 and cfg.optim.options.fisher == "sampled"
    with pytest.raises(ValidationError):
        cfg.optim.options.inv_every = 2.5
    with pytest.raises(ConfigAttributeError):
        cfg.optim.options.inv_evry = 2


def _final_pt(path, feat_dim=40, huge=False, nan=False):
    torch.manual_seed(0)
    model = DNN(feat_dim, 6, DNNConfig(context=2, hidden_dim=8, num_layers=1))
    with torch.no_grad():
        if huge:  # finite weights whose logits overflow: log_softmax(inf, inf, ...) is NaN
            model.net[2].weight.fill_(3e38)
        if nan:
            model.net[2].bias[1] = float("nan")
    torch.save({"model": model.state_dict(), "feat_dim": feat_dim, "num_pdfs": 6, "model_cfg": model.cfg.__dict__,
                "log_priors": np.log(np.full(6, 1 / 6))}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def dev_fbank(tiny_corpus):
    return tiny_corpus.fbank_cuts("dev")  # built once per session (with the other splits)


def test_nnet_forward_input_errors_are_one_line_and_write_no_ark(tmp_path, dev_fbank, capsys):
    cuts = dev_fbank
    ark = tmp_path / "out.ark"

    def forward(model):
        return _error_line(capsys, ["nnet-forward", "--model", str(model), "--cuts", str(cuts), "--ark", str(ark),
                                    "--device", "cpu"])  # fmt: skip

    prefix = "asr-hf nnet-forward: error: "
    missing = tmp_path / "missing.pt"
    assert forward(missing) == f"{prefix}{missing}: not found"
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02garbage, not a torch file")
    assert forward(corrupt).startswith(f"{prefix}{corrupt}: unreadable model file (")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    assert forward(other) == (f"{prefix}{other}: not a final.pt written by train-am (needs model, feat_dim, num_pdfs, "
                              "model_cfg, log_priors; has ['weights'])")  # fmt: skip
    nan = _final_pt(tmp_path / "nan.pt", nan=True)
    assert forward(nan) == f"{prefix}{nan}: model has non-finite weights in net.2.bias"
    mfcc = _final_pt(tmp_path / "mfcc.pt", feat_dim=13)
    assert forward(mfcc) == f"{prefix}{cuts}: 40-dimensional features, model {mfcc} takes 13"
    huge = _final_pt(tmp_path / "huge.pt", huge=True)
    first = next(iter(CutSet.from_file(cuts))).id
    assert forward(huge) == f"{prefix}{first}: non-finite pseudo log-likelihoods"
    assert not ark.exists() and not list(tmp_path.glob(".out.ark*"))
    assert main(["nnet-forward", "--model", str(_final_pt(tmp_path / "ok.pt")), "--cuts", str(cuts), "--ark", str(ark),
                 "--device", "cpu"]) == 0 and ark.stat().st_size > 0  # fmt: skip


def test_train_am_skips_a_finished_run_of_the_same_config_only(recipe_root, tmp_path, capsys):
    """The recipe keeps no skip guard: train-am itself skips a finished run of the same config,
    trains on under a changed one, and refuses a finished run older than its training data."""
    import os

    exp = tmp_path / "exp_skip"
    argv = ["train-am", "--root", str(recipe_root), "model=dnn_tiny", "trainer.device=cpu", "optim=sgd",
            "trainer.max_epochs=1", f"trainer.exp_dir={exp}"]
    assert main(argv) == 0
    final = exp / "final.pt"
    made = final.stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert final.stat().st_mtime_ns == made and "holds a finished run of this config" in capsys.readouterr().err
    assert main(argv[:-2] + ["trainer.max_epochs=2", f"trainer.exp_dir={exp}"]) == 0  # resumes and trains on
    assert final.stat().st_mtime_ns != made
    ali = recipe_root / "exp" / "tri1" / "ali" / "cuts_train.jsonl.gz"
    later = (exp / "train_summary.json").stat().st_mtime + 10
    os.utime(ali, (later, later))  # realigned since
    try:
        line = _error_line(capsys, argv[:-2] + ["trainer.max_epochs=2", f"trainer.exp_dir={exp}"])
    finally:
        os.utime(ali, None)
    assert line.startswith(f"asr-hf train-am: error: {exp}: finished run older than its training data ({ali} is newer")


def test_nnet_forward_skips_a_current_ark_and_redoes_it_for_a_newer_model(tmp_path, dev_fbank, capsys):
    import os

    model, ark = _final_pt(tmp_path / "ok.pt"), tmp_path / "out.ark"
    argv = ["nnet-forward", "--model", str(model), "--cuts", str(dev_fbank), "--ark", str(ark), "--device", "cpu"]
    assert main(argv) == 0
    made = ark.stat().st_mtime_ns
    assert main(argv) == 0 and ark.stat().st_mtime_ns == made
    later = (tmp_path / ".out.ark.done").stat().st_mtime + 10
    os.utime(model, (later, later))  # retrained
    assert main(argv) == 0 and ark.stat().st_mtime_ns != made
