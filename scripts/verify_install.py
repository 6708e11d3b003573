"""Check that the environment holds exactly what requirements.lock pins, and that it works.

Run by ``scripts/setup.sh`` after installing (also usable alone)::

    .venv/bin/python scripts/verify_install.py [--lock requirements.lock] [--skip-tools]

Two kinds of check, each failing with ONE line that names the package and its version:

1. versions: every installed distribution that the lock names must have the locked
   version (a package upgraded or downgraded by hand is caught here, before it can fail
   deep inside a worker), and every locked runtime dependency of asr_hf must be present;
2. function: import and exercise each piece the recipes rely on: torch (a matmul),
   torchaudio (its compiled extension, one Kaldi fbank), lhotse, kaldi_hmm_gmm (then
   kaldifst, in that order), kaldilm, kaldingram, kaldi_io, and the espeak-ng and flite
   synthesizers once each.

Exit status 0 when everything holds, 1 otherwise.  Deliberately free of asr_hf imports,
so that a broken dependency cannot hide behind an import error of the package itself.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


class CheckFailed(Exception):
    """One failed check; ``str()`` is the one-line message."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if not m:
            raise CheckFailed(f"{path}:{n}: not an exact pin 'name==version': {line!r}")
        pins[canonical(m.group(1))] = m.group(2)
    return pins


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def check_versions(pins: dict[str, str]) -> None:
    """Installed packages named by the lock carry the locked version; asr_hf's own
    runtime requirements (those without an extra marker) are all installed."""
    for dist in md.distributions():
        # packages vendored inside another (setuptools/_vendor/packaging-*.dist-info, put on
        # sys.path once setuptools is imported) are not installed distributions
        if "_vendor" in Path(str(getattr(dist, "_path", ""))).parts:
            continue
        name = canonical(dist.metadata["Name"] or "")
        if name in pins and dist.version != pins[name]:
            raise CheckFailed(
                f"{name} {dist.version} is installed but requirements.lock pins {name}=={pins[name]} "
                f"(reinstall with: pip install -c requirements.lock '{name}=={pins[name]}')"
            )
    try:
        requires = md.requires("asr_hf") or []
    except md.PackageNotFoundError:
        raise CheckFailed("asr_hf is not installed in this environment (run bash scripts/setup.sh)") from None
    for req in requires:
        if "extra ==" in req:
            continue
        name = canonical(re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0])
        if installed_version(name) is None:
            raise CheckFailed(f"{name} (required by asr_hf) is not installed")


def _version_of(module: str, dist: str) -> str:
    return installed_version(dist) or "not installed"


def _check_torch() -> None:
    import torch

    a = torch.arange(6.0).reshape(2, 3)
    if float((a @ a.T).sum()) != 83.0:
        raise RuntimeError("wrong matmul result")


def _check_torchaudio() -> None:
    import torch
    import torchaudio._extension  # noqa: F401  loads libtorchaudio: fails on a torch/torchaudio mismatch
    from torchaudio.compliance import kaldi

    wave = torch.sin(torch.arange(16000) * 0.05).unsqueeze(0)
    feats = kaldi.fbank(wave, num_mel_bins=23, sample_frequency=16000)
    if tuple(feats.shape) != (98, 23) or not bool(torch.isfinite(feats).all()):
        raise RuntimeError(f"fbank gave shape {tuple(feats.shape)}")


def _check_lhotse() -> None:
    from lhotse import CutSet, MonoCut  # noqa: F401


def _check_kaldi() -> None:
    import kaldi_hmm_gmm  # noqa: F401  before kaldifst: the other order can hang
    import kaldifst

    fst = kaldifst.StdVectorFst()
    s = fst.add_state()
    fst.start = s
    fst.set_final(s, 0.0)
    if fst.num_states != 1:
        raise RuntimeError("kaldifst built a wrong FST")
    kaldi_hmm_gmm.HmmTopology  # noqa: B018  the binding module is usable


def _check_kaldilm() -> None:
    import kaldilm  # noqa: F401


def _check_kaldingram() -> None:
    import kaldingram  # noqa: F401


def _check_kaldi_io() -> None:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import kaldi_io  # noqa: F401


PYTHON_CHECKS: list[tuple[str, str, Callable[[], None]]] = [
    ("torch", "torch", _check_torch),
    ("torchaudio", "torchaudio", _check_torchaudio),
    ("lhotse", "lhotse", _check_lhotse),
    ("kaldi_hmm_gmm", "kaldi-hmm-gmm", _check_kaldi),
    ("kaldilm", "kaldilm", _check_kaldilm),
    ("kaldingram", "kaldingram", _check_kaldingram),
    ("kaldi_io", "kaldi-io", _check_kaldi_io),
]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def check_python_packages() -> None:
    for module, dist, fn in PYTHON_CHECKS:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001  every failure becomes one line
            raise CheckFailed(f"{dist} {_version_of(module, dist)} does not work: {_one_line(exc)}") from None


def _run_tool(argv: list[str], out: Path) -> None:
    exe = shutil.which(argv[0])
    if exe is None:
        raise CheckFailed(f"{argv[0]} is not on PATH (scripts/setup.sh installs it with apt-get)")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size < 1000:
        msg = " ".join((proc.stderr or proc.stdout).split())[:200]
        raise CheckFailed(f"{argv[0]} failed to synthesize a test sentence (rc {proc.returncode}): {msg}")


def check_tools() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        _run_tool(["espeak-ng", "-w", str(t / "e.wav"), "checking the synthesizer"], t / "e.wav")
        _run_tool(["flite", "-t", "checking the synthesizer", "-o", str(t / "f.wav")], t / "f.wav")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    ap.add_argument("--skip-tools", action="store_true", help="do not run espeak-ng / flite")
    args = ap.parse_args(argv)
    try:
        check_versions(read_lock(args.lock))
        check_python_packages()
        if not args.skip_tools:
            check_tools()
    except CheckFailed as exc:
        print(f"setup: FAILED: {exc}", file=sys.stderr)
        return 1
    print(
        "setup: verified torch %s, torchaudio %s, lhotse %s, kaldi-hmm-gmm %s, kaldifst %s, espeak-ng, flite"
        % tuple(_version_of(d, d) for d in ("torch", "torchaudio", "lhotse", "kaldi-hmm-gmm", "kaldifst"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
