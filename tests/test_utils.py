import os
import stat

import pytest

from asr_hf.utils.io import atomic_output, is_done, mark_done


def test_atomic_output_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_atomic_output_directory_and_markers(tmp_path):
    d = tmp_path / "dir"
    with atomic_output(d, is_dir=True) as tmp:
        (tmp / "a").write_text("1")
    assert (d / "a").read_text() == "1"
    assert not is_done(d)
    mark_done(d)
    assert is_done(d)
