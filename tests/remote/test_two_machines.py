"""Three "machines" that share nothing but a server's URL and a token: a server with its own
home, two agents (``services`` and ``default``) and a client, each with a different, empty
home and working folder. The client queues a decorator pipeline whose steps pass a numpy
array to each other as an artifact; it completes, and everything it made is on the server.

It runs twice: the server on its embedded store, and the server on PostgreSQL with artifacts in
an S3-compatible bucket (real servers started by the fixtures), which the other machines reach
with the usual AWS_* variables of their environment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stepline.backend.http.client import HttpBackend
from stepline.core.records import TaskFilter
from stepline.core.status import FINAL, TaskStatus
from tests.agentproc import start_agent
from tests.serverproc import running_server, server_env

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parent / "scripts" / "two_machines_pipeline.py"
DEADLINE = 90.0


@pytest.mark.parametrize("store", ["sqlite", "postgres+s3"])
def test_a_remote_pipeline_across_machines(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    server_home = tmp_path / "server"
    team: dict[str, str] = {}
    if store != "sqlite":
        team["STEPLINE_DB"] = request.getfixturevalue("pg_cluster").new_database()
        team["STEPLINE_STORAGE"] = request.getfixturevalue("s3_server").new_bucket()
    made = subprocess.run(
        [sys.executable, "-m", "stepline.cli.main", "server", "token", "create", "team"],
        env=server_env(server_home, **team), capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = made.stdout.strip()
    assert token.startswith("stp_")
    with running_server(server_home, **team) as server:
        env = {"STEPLINE_API": server.url, "STEPLINE_TOKEN": token}
        homes = {name: tmp_path / name for name in ("services-agent", "worker", "client")}
        services = start_agent(
            homes["services-agent"], ["services"], extra=["--services-mode"], env=env,
            name="services-agent",
        )  # fmt: skip
        worker = start_agent(homes["worker"], ["default"], env=env, name="worker")
        try:
            src = tmp_path / "client-src"
            src.mkdir()
            shutil.copy(SCRIPT, src / "pipeline.py")
            client_env = {k: v for k, v in server_env(homes["client"]).items()}
            client_env.update(env)
            queued = subprocess.run(
                [sys.executable, "pipeline.py"], cwd=src, env=client_env,
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert queued.returncode == 0, queued.stderr
            shutil.rmtree(src)  # the agents can only run what the server stored

            observer = HttpBackend(server.url, home=tmp_path / "observer", token=token)
            run = _wait_for_run(observer, services, worker)
            assert run.status == TaskStatus.completed, (run.status_reason, _logs(services, worker))
            steps = {
                t.name: t for t in observer.find_tasks(TaskFilter(parent=run.id, archived=None))
            }
            assert {"make", "total"} <= set(steps)
            assert all(s.status == TaskStatus.completed for s in steps.values())

            agents = {a.name: a.id for a in observer.get_agents()}
            assert observer.get_runtime(run.id)["_agent"] == agents["services-agent"]
            for step in ("make", "total"):
                assert observer.get_runtime(steps[step].id)["_agent"] == agents["worker"]

            matrix = {a.name: a for a in observer.get_artifacts(steps["make"].id)}["matrix"]
            array = np.load(observer.artifact_local_path(matrix, verify=True))
            assert array.shape == (300, 300) and float(array.sum()) == float(np.arange(90000).sum())
            log = "\n".join(line.text for line in observer.get_log(run.id))
            assert f"total {float(np.arange(90000).sum())}" in log
            observer.close()
        finally:
            services.stop()
            worker.stop()
    # the artifacts live on the server's storage; no other home holds a store of its own
    if store == "sqlite":
        assert (server_home / "stepline.db").exists()
        assert any((server_home / "artifacts").rglob("*.npy"))
    else:
        assert not (server_home / "stepline.db").exists()
        bucket = team["STEPLINE_STORAGE"].removeprefix("s3://").split("/")[0]
        listed = request.getfixturevalue("s3_server").client().list_objects_v2(Bucket=bucket)
        assert any(o["Key"].endswith(".npy") for o in listed.get("Contents", []))
    for home in homes.values():
        assert not (home / "stepline.db").exists()


def _wait_for_run(backend: HttpBackend, *agents: object) -> object:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        runs = backend.find_tasks(TaskFilter(project="server-tests", name="^two-machines$"))
        if runs and runs[0].status in FINAL:
            return runs[0]
        if runs:
            backend.watch({runs[0].id: runs[0].status}, timeout=2.0)
        else:
            time.sleep(0.05)
    pytest.fail(f"the pipeline did not finish in {DEADLINE} s\n{_logs(*agents)}")


def _logs(*agents: object) -> str:
    return "\n".join(a.output()[-3000:] for a in agents)  # type: ignore[attr-defined]
