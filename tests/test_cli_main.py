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
