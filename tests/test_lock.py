"""requirements.lock pins the whole closure exactly and agrees with pyproject.toml."""

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _verify_module():
    spec = importlib.util.spec_from_file_location("verify_install", ROOT / "scripts" / "verify_install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_lock_pins_every_line_exactly():
    lines = [ln for ln in (ROOT / "requirements.lock").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines, "empty lock"
    for ln in lines:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*==[^\s=<>~!;]+", ln), f"not an exact, canonical pin: {ln!r}"
    names = [ln.split("==")[0] for ln in lines]
    assert names == sorted(set(names)), "lock lines must be unique and sorted"


def test_lock_satisfies_pyproject():
    pins = _verify_module().read_lock(ROOT / "requirements.lock")
    for req in _project_requirements():
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req} (pyproject.toml) is not pinned in requirements.lock; run bash scripts/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject.toml's {req}"
        )


def test_torch_and_torchaudio_are_pinned_as_a_pair():
    """torchaudio's compiled part loads only with the torch it was built for."""
    pins = _verify_module().read_lock(ROOT / "requirements.lock")
    torch_req = next(r for r in _project_requirements() if r.name == "torch")
    ta_req = next(r for r in _project_requirements() if r.name == "torchaudio")
    assert str(torch_req.specifier).startswith("==") and str(ta_req.specifier).startswith("==")
    assert pins["torch"] == "2.11.0" and pins["torchaudio"] == "2.11.0"


def test_installed_environment_matches_lock():
    """The environment running the tests is the locked one (what setup.sh verifies), also
    once setuptools has put its vendored packages (an older packaging) on sys.path."""
    import setuptools  # noqa: F401

    mod = _verify_module()
    mod.check_versions(mod.read_lock(ROOT / "requirements.lock"))


def test_version_drift_is_one_line(tmp_path):
    mod = _verify_module()
    lock = tmp_path / "lock"
    lock.write_text("torchaudio==0.0.1\n")
    with pytest.raises(mod.CheckFailed) as e:
        mod.check_versions(mod.read_lock(lock))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("torchaudio 2.11.0 is installed but requirements.lock pins torchaudio==0.0.1")
    lock.write_text("torch>=2\n")
    with pytest.raises(mod.CheckFailed, match="not an exact pin"):
        mod.read_lock(lock)
