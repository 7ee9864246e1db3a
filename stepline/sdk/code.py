"""Code delivery: what a task stores so that it runs on a machine without the user's source tree.

A script task stores its entry script (``script.content``) and the local Python modules it
imports (``script.modules``: relative path -> source), found by reading the imports of the
entry script and, recursively, of every local module found: a module is local when its file
lies under the entry script's folder. A function step stores its code and the local modules
that code imports, found the same way under the folder of the module that defined it. Tasks
too large to carry their code keep the git remote, commit and uncommitted diff instead.

``materialize`` writes stored code into a folder of the cache named by its content's hash, so
a second task with the same code finds it there.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

#: Stop collecting local modules past this many bytes or files (and say so in the script).
MAX_MODULES_BYTES = 8 << 20
MAX_MODULES = 400

_cache: dict[tuple[str, str], dict[str, str]] = {}
_cache_lock = threading.Lock()


def imported_modules(source: str, package: str = "", *, submodules: bool = True) -> list[str]:
    """Absolute names of the modules ``source`` imports; ``package`` resolves relative ones.
    With ``submodules``, ``from pkg import name`` also counts ``pkg.name`` (it may be one)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    continue
                base = parts[: len(parts) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            if mod:
                names.append(mod)
                # "from pkg import sub" may import the submodule pkg.sub
                if submodules:
                    names.extend(f"{mod}.{a.name}" for a in node.names if a.name != "*")
    return list(dict.fromkeys(names))


def _module_files(root: Path, name: str) -> list[Path]:
    """The files under ``root`` that importing ``name`` runs (package __init__s included)."""
    parts = name.split(".")
    found: list[Path] = []
    for i in range(1, len(parts) + 1):
        base = root.joinpath(*parts[:i])
        init = base / "__init__.py"
        if init.is_file():
            found.append(init)
        elif base.with_suffix(".py").is_file() and i == len(parts):
            found.append(base.with_suffix(".py"))
        elif not base.is_dir():
            break
    return found


_installed: set[str] | None = None


def _is_installed(top: str) -> bool:
    """Whether ``top`` is the top-level name of an installed distribution (an editable
    install of a project in the same folder included): such packages are the environment's
    to provide, not code to carry."""
    global _installed
    if _installed is None:
        from importlib import metadata

        try:
            _installed = set(metadata.packages_distributions())
        except Exception:
            _installed = set()
    return top in _installed


def local_modules(source: str, root: str | os.PathLike[str], package: str = "") -> dict[str, str]:
    """{path relative to ``root``: source} of the local modules ``source`` imports,
    recursively."""
    root_path = Path(root)
    if not root_path.is_dir():
        return {}
    key = (str(root_path), hashlib.sha1(f"{package}\0{source}".encode()).hexdigest())
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return dict(hit)
    found: dict[str, str] = {}
    total = 0
    todo = [(source, package)]
    while todo:
        text, pkg = todo.pop()
        for name in imported_modules(text, pkg):
            files = _module_files(root_path, name)
            if files and _is_installed(name.split(".")[0]):
                continue
            for path in files:
                rel = path.relative_to(root_path).as_posix()
                if rel in found:
                    continue
                try:
                    body = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                total += len(body)
                if total > MAX_MODULES_BYTES or len(found) >= MAX_MODULES:
                    found["__truncated__"] = "1"
                    todo = []
                    break
                found[rel] = body
                todo.append((body, ".".join(Path(rel).parent.parts)))
    with _cache_lock:
        _cache[key] = dict(found)
    return found


def code_digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:32]


def _safe_rel(rel: str) -> bool:
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts and rel not in ("", ".")


def materialize(files: dict[str, str], cache_dir: Path) -> Path:
    """A folder holding ``files`` ({relative path: text}), made once per content."""
    folder = cache_dir / "code" / code_digest(files)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        for rel, text in files.items():
            if rel == "__truncated__":
                continue
            if not _safe_rel(rel):
                raise ValueError(f"stored code path {rel!r} leaves its folder")
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        try:
            os.rename(tmp, folder)
        except OSError:  # another process made it first
            if not folder.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def checkout_git(script: dict[str, Any], cache_dir: Path) -> Path:
    """A checkout of the task's repository at its commit with its uncommitted diff applied."""
    repo = script.get("repository") or ""
    commit = script.get("commit") or ""
    diff = script.get("diff") or ""
    if not repo:
        raise ValueError("the task stores neither its code nor a git repository")
    digest = hashlib.sha256(f"{repo}\0{commit}\0{diff}".encode()).hexdigest()[:32]
    folder = cache_dir / "git" / digest
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:

        def git(*args: str, stdin: str | None = None) -> None:
            out = subprocess.run(
                ["git", *args], cwd=tmp, input=stdin, capture_output=True, text=True, check=False
            )
            if out.returncode != 0:
                raise ValueError(f"git {args[0]} failed for {repo}: {out.stderr.strip()}")

        git("clone", "--quiet", repo, ".")
        if commit:
            git("checkout", "--quiet", commit)
        if diff.strip():
            git(
                "apply",
                "--whitespace=nowarn",
                "-",
                stdin=diff if diff.endswith("\n") else diff + "\n",
            )
        with contextlib.suppress(OSError):
            os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
