"""Virtual environments for tasks that list their own packages, built with uv.

An environment is made once per set of requirements (and Python version) and kept under
``$STEPLINE_HOME/cache/envs/<hash>``: the next task with the same requirements starts at once.
It sees the agent's own packages (stepline among them) after its own, so a task's pinned
versions win and everything else is what the agent has.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path


class EnvironmentError_(RuntimeError):
    """The environment could not be built; the message says why."""


def _uv() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvironmentError_(
        "building a task's environment needs uv: pip install uv (it comes with stepline's "
        "dependencies)"
    )


def env_key(requirements: list[str]) -> str:
    body = {"python": sys.version.split()[0], "exe": sys.executable, "reqs": sorted(requirements)}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]


def _agent_site_dirs() -> list[str]:
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return [d for d in dict.fromkeys(dirs) if d and os.path.isdir(d)]


def python_for(requirements: list[str], cache_dir: Path, log: list[str] | None = None) -> str:
    """The Python executable of an environment holding ``requirements``, built if needed."""
    folder = cache_dir / "envs" / env_key(requirements)
    python = folder / "bin" / "python"
    ready = folder / ".ready"
    if ready.is_file():
        return str(python)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.is_file():
            return str(python)
        if folder.exists():
            shutil.rmtree(folder)
        uv = _uv()

        def run(*args: str) -> None:
            out = subprocess.run([uv, *args], capture_output=True, text=True, check=False)
            if log is not None:
                log.extend(ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip())
            if out.returncode != 0:
                shutil.rmtree(folder, ignore_errors=True)
                raise EnvironmentError_(
                    f"uv {args[0]} {args[1] if len(args) > 1 else ''} failed: "
                    f"{(out.stderr or out.stdout).strip()[-2000:]}"
                )

        run("venv", "--quiet", "--python", sys.executable, str(folder))
        if requirements:
            run("pip", "install", "--quiet", "--python", str(python), *requirements)
        # the agent's packages come after the environment's own (a .pth line starting with
        # "import" runs, and addsitedir also reads the .pth files there: editable installs)
        out = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        purelib = Path(out.stdout.strip())
        lines = [f"import site; site.addsitedir({d!r})" for d in _agent_site_dirs()]
        (purelib / "zz_stepline_agent.pth").write_text("\n".join(lines) + "\n")
        ready.write_text(" ".join(requirements))
    return str(python)
