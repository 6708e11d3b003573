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


def test_is_current_needs_the_same_request_and_newer_than_inputs(tmp_path):
    from asr_hf.utils.io import is_current, mark_output

    src, out = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("a")
    os.utime(src, (1000, 1000))
    request = {"command": "x", "order": 3, "path": tmp_path / "p"}
    assert not is_current([out], request, [src])  # no output
    out.write_text("b")
    assert not is_current([out], request, [src])  # no marker
    (tmp_path / ".out.txt.done").touch()
    assert not is_current([out], request, [src])  # an old, empty marker records no request
    mark_output(out, request)
    assert is_current([out], request, [src])
    assert not is_current([out], {**request, "order": 4}, [src])  # another option
    assert not is_current([out, tmp_path / "missing"], request, [src])  # an output missing
    os.utime(src, None)
    marker = tmp_path / ".out.txt.done"
    os.utime(marker, (2000, 2000))
    assert not is_current([out], request, [src])  # the input changed after the output was made
    d = tmp_path / "dir"
    d.mkdir()
    mark_output(d, request)
    assert (d / ".done").is_file() and is_current([d], request, [])
