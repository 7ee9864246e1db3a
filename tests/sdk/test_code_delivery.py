"""Code delivery: the local modules a script or step imports, stored code written out once,
and a git checkout (commit + uncommitted diff) for tasks that carry no code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stepline.core.errors import ValidationError
from stepline.pipeline.runner import ENV_AGENT, script_location
from stepline.sdk.code import local_modules, materialize


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_local_modules_follow_imports_recursively_and_skip_the_rest(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "helper.py": "from pkg import mod\nX = 1\n",
            "pkg/__init__.py": "",
            "pkg/mod.py": "from . import deep\nY = 2\n",
            "pkg/deep.py": "Z = 3\n",
            "unused.py": "W = 4\n",
        },
    )
    found = local_modules("import os, numpy\nimport helper\n", tmp_path)
    assert set(found) == {"helper.py", "pkg/__init__.py", "pkg/mod.py", "pkg/deep.py"}
    assert found["pkg/deep.py"] == "Z = 3\n"


def test_an_installed_package_in_the_folder_is_not_carried(tmp_path: Path) -> None:
    write(tmp_path, {"pytest/__init__.py": "", "mine.py": "A = 1\n"})
    assert set(local_modules("import pytest\nimport mine\n", tmp_path)) == {"mine.py"}


def test_materialize_writes_once_and_refuses_paths_that_leave_the_folder(tmp_path: Path) -> None:
    files = {"a.py": "A = 1\n", "pkg/b.py": "B = 2\n"}
    first = materialize(files, tmp_path / "cache")
    assert (first / "pkg" / "b.py").read_text() == "B = 2\n"
    assert materialize(dict(files), tmp_path / "cache") == first
    with pytest.raises(ValueError, match="leaves its folder"):
        materialize({"../evil.py": "x"}, tmp_path / "cache")
    assert not (tmp_path / "cache" / "evil.py").exists()
    assert not (tmp_path / "evil.py").exists()


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_a_task_without_stored_code_runs_its_git_commit_with_its_diff(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    write(repo, {"jobs/train.py": "print('v1')\n"})
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "one")
    commit = git(repo, "rev-parse", "HEAD")
    (repo / "jobs/train.py").write_text("print('v2, uncommitted')\n")
    diff = git(repo, "diff", "HEAD") + "\n"
    (repo / "jobs/train.py").write_text("print('v3, later')\n")  # what the agent must not see
    script = {
        "entry_point": "jobs/train.py",
        "entry_path": str(repo / "jobs/train.py"),
        "repository": str(repo),
        "commit": commit,
        "diff": diff,
    }
    monkeypatch.setenv(ENV_AGENT, "agent-under-test")
    path, workdir = script_location(script)
    assert Path(path).read_text() == "print('v2, uncommitted')\n"
    assert Path(workdir) == Path(path).parent
    assert str(home) in path  # a checkout in the cache, not the user's files
    again, _ = script_location(script)
    assert again == path  # made once


def test_a_task_with_no_code_and_no_repository_says_so(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_AGENT, "agent-under-test")
    with pytest.raises(ValidationError, match="neither its code nor a git repository"):
        script_location({"entry_point": "gone.py", "entry_path": "/nonexistent/gone.py"})
