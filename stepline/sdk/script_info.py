"""What a task records about the code that runs it: entry script, git state, Python, packages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from stepline.sdk.code import local_modules

MAX_CONTENT = 2 << 20
MAX_DIFF = 2 << 20


def _git(cwd: str, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(path: str) -> dict[str, Any]:
    """Repository, branch, commit and uncommitted diff of the checkout holding ``path``."""
    folder = str(Path(path).parent) if os.path.isfile(path) else path
    root = _git(folder, "rev-parse", "--show-toplevel")
    if not root:
        return {}
    diff = _git(root, "diff", "HEAD") or ""
    return {
        "repository": _git(root, "remote", "get-url", "origin") or "",
        "repository_root": root,
        "branch": _git(root, "rev-parse", "--abbrev-ref", "HEAD") or "",
        "commit": _git(root, "rev-parse", "HEAD") or "",
        "diff": diff if len(diff) <= MAX_DIFF else "",
        "diff_truncated": len(diff) > MAX_DIFF,
    }


def installed_packages() -> list[str]:
    from importlib import metadata

    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            seen.setdefault(name, dist.version)
    return sorted(f"{n}=={v}" for n, v in seen.items())


def python_info() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "binary": f"python{sys.version_info.major}.{sys.version_info.minor}",
        "executable": sys.executable,
        "platform": sys.platform,
    }


def add_git_info(info: dict[str, Any]) -> dict[str, Any]:
    """Add the repository, branch, commit and diff of the checkout holding the entry script."""
    path = info.get("entry_path")
    if path:
        info.update(git_info(path))
        if info.get("repository_root"):
            info["entry_point"] = os.path.relpath(path, info["repository_root"])
    return info


def script_info(
    entry: str | None = None, *, with_packages: bool = True, with_git: bool = True
) -> dict[str, Any]:
    """The ``script`` section of a task started from ``entry`` (default: ``sys.argv[0]``);
    without ``with_git`` the repository fields are left for ``add_git_info``."""
    info: dict[str, Any] = python_info()
    info["working_dir"] = os.getcwd()
    argv0 = entry if entry is not None else (sys.argv[0] if sys.argv else "")
    if argv0 and os.path.isfile(argv0):
        path = os.path.abspath(argv0)
        info["entry_point"] = os.path.basename(path)
        info["entry_path"] = path
        info["argv"] = list(sys.argv[1:]) if entry is None else []
        try:
            if os.path.getsize(path) <= MAX_CONTENT:
                info["content"] = Path(path).read_text(encoding="utf-8", errors="replace")
                # the local modules it imports travel with it (see sdk.code)
                info["modules"] = local_modules(info["content"], os.path.dirname(path))
        except OSError:
            pass
        if with_git:
            add_git_info(info)
    else:
        info["entry_point"] = argv0 or "<interactive>"
    if with_packages:
        info["requirements"] = installed_packages()
    return info
