"""Pool workers die with their parent (asr_hf.utils.procs)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

PARENT = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from asr_hf.utils.procs import pool_kwargs

    def pid_then_sleep(_):
        time.sleep(0.2)
        return os.getpid()

    if __name__ == "__main__":
        ctx = multiprocessing.get_context(sys.argv[1])
        pool = ProcessPoolExecutor(2, mp_context=ctx, **pool_kwargs())
        pids = set(pool.map(pid_then_sleep, range(4)))
        pool.submit(time.sleep, 600)  # a worker blocked in a long task
        pool.submit(time.sleep, 600)
        print(" ".join(map(str, sorted(pids))), flush=True)
        time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_die_when_the_parent_is_killed(tmp_path, method):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), method], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert pids and all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)], "workers outlived their killed parent"
    finally:
        parent.kill()
