"""Step functions for tests/pipeline/test_execution.py.

They live at module level because a function step stores its source (plus this module's imports,
the literal constants it reads and the same-module helpers it calls) and, in process mode, runs
that stored text in a forked child. Waiting steps poll for marker files in a folder the test
passes as an argument, so a test can tell when a step is running and release it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

WAIT = 20.0  # seconds a step waits for a marker before giving up
HOLD = 90.0  # seconds a held step waits for the test to release it


def _wait_for(path, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


def _touch(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(tmp, path)


def make_number():
    return 41


def add_one(x):
    if not isinstance(x, int) or isinstance(x, bool):
        raise TypeError(f"x arrived as {type(x).__name__}: {x!r}")
    return x + 1


def type_and_value(x):
    return f"{type(x).__name__}:{x}"


def echo(value):
    return value


def boom(message):
    raise ValueError(message)


def rendezvous(folder, me, other):
    """Succeeds only when the step named ``other`` runs at the same time."""
    _touch(os.path.join(folder, "here-" + me))
    _wait_for(os.path.join(folder, "here-" + other), WAIT)
    return me


def hold(folder, name):
    """Says it started, then waits until the test releases it (or it is killed)."""
    _touch(os.path.join(folder, "started-" + name))
    _wait_for(os.path.join(folder, "release"), HOLD)
    return name


def fail_after_started(folder, other, message):
    """Fails once the step named ``other`` (a ``hold`` step) is running."""
    _wait_for(os.path.join(folder, "started-" + other), WAIT)
    raise RuntimeError(message)


def fail_once(folder):
    marker = os.path.join(folder, "failed-once")
    if not os.path.exists(marker):
        _touch(marker)
        raise RuntimeError("the first attempt fails")
    return "second attempt"


def sleep_with_child(folder):
    """Sleeps long, and so does a child process it starts (its pid goes to child.pid)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    tmp = os.path.join(folder, "child.pid.tmp")
    with open(tmp, "w") as fh:
        fh.write(str(child.pid))
    os.replace(tmp, os.path.join(folder, "child.pid"))
    _touch(os.path.join(folder, "started-sleeper"))
    time.sleep(120)


def exit_with(code):
    sys.exit(code)


def kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)


def shout(text):
    print("out:" + text)
    print("err:" + text, file=sys.stderr)
    return text
