"""The demo's servers go when the demo is killed outright (`story.orphan_guarded`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mlwarden.demo import story

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_server_started_by_the_demo_dies_with_it_even_on_sigkill(tmp_path) -> None:
    # A stand-in for the demo: starts a long sleep the way the demo starts its servers,
    # prints the child's pid, and waits. SIGKILL runs none of its cleanup.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import subprocess, sys, time
            from mlwarden.demo.story import orphan_guarded
            child = subprocess.Popen(orphan_guarded(["sleep", "60"]))
            print(child.pid, flush=True)
            time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    # The guard has become the server (same pid, exec'd): wait until it runs `sleep`.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{child}/cmdline", "rb") as f:
            if f.read().split(b"\0")[0] == b"sleep":
                break
        time.sleep(0.02)
    else:
        pytest.fail("the guarded child never became `sleep 60`")
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the server outlived the demo that started it"


def test_the_guard_runs_the_command_as_given() -> None:
    out = subprocess.run(story.orphan_guarded(["sh", "-c", "echo $0 $1", "a b", "c"]),
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout == "a b c\n"
