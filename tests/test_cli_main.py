import subprocess
import sys


def test_cli_lists_commands():
    out = subprocess.run([sys.executable, "-m", "asr_hf.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("synth", "features", "export-feats", "import-feats"):
        assert cmd in out.stdout


def test_cli_data_error_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "asr_hf.cli", "features", "--corpus", str(tmp_path), "--out", str(tmp_path / "f")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and str(tmp_path) in out.stderr and "Traceback" not in out.stderr


TORCHAUDIO_ABI_ERROR = (
    "/venv/lib/python3.11/site-packages/torchaudio/lib/libtorchaudio.abi3.so: "
    "undefined symbol: torch_exception_get_what_without_backtrace"
)


def _worker_with_broken_library(_: int) -> None:
    raise OSError(TORCHAUDIO_ABI_ERROR)


def test_worker_library_failure_is_one_line_naming_the_package(monkeypatch, capsys):
    """A stage whose (spawned) worker dies on a library load error stops with one line
    naming the package and its installed version, not a multiprocessing traceback."""
    import argparse
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from importlib import metadata

    from asr_hf import cli

    def run_pool(args):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_worker_with_broken_library, [0]))

    def parser():
        p = argparse.ArgumentParser(prog="asr-hf")
        p.add_argument("-v", "--verbose", action="store_true")
        sub = p.add_subparsers(dest="command", required=True)
        sub.add_parser("synth").set_defaults(func=run_pool)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main(["synth"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("asr-hf synth: error: package torchaudio ")
    assert metadata.version("torchaudio") in err and "undefined symbol" in err


def test_missing_module_names_it():
    from asr_hf.cli import library_failure

    exc = ModuleNotFoundError("No module named 'no_such_pkg'", name="no_such_pkg")
    assert library_failure(exc) == "package no_such_pkg failed: ModuleNotFoundError: No module named 'no_such_pkg'"
