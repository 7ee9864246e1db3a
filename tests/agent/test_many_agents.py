"""Many agents on one PostgreSQL database: four real ``stepline agent`` processes drain 2,000
queued tasks while the database server restarts under them. It runs on the team's store only
(``home`` of ``tests/agent/conftest.py`` as ``postgres+s3``).

Each task is a trivial function step that appends its number to one file (``O_APPEND``: one
``write`` per run, so lines never mix), so a task run twice shows up twice, and one never run
is missing; each agent's console says ``running task ID`` once per task it claimed. The
server is restarted (``pg_cluster.restart``: a fast shutdown, which cuts every connection,
then a second down) once a quarter of the tasks have run; the agents and their task processes
must ride it out (store calls are retried while the database is gone).
"""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from stepline.backend import get_backend
from stepline.backend.sql.store import SqlBackend
from stepline.core import params as pv
from stepline.core.records import NewTask, Param, TaskFilter
from stepline.core.status import TaskStatus
from tests.agentproc import AgentProc, start_agent

pytestmark = pytest.mark.slow

TASKS = 2000
AGENTS = 4
RESTART_AFTER = 500  #: tasks run before the server is restarted
QUEUE = "many"
ROUTINE = re.compile(r"\[stepline agent\] (running task \w+ \(run-\d+\)|task \w+ ended )")
FINAL = (TaskStatus.completed, TaskStatus.failed, TaskStatus.stopped)
TIMEOUT = 180.0  #: seconds the whole drain may take before the test gives up

SOURCE = """\
def record_run(out, n):
    import os

    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{n}\\n".encode())
    finally:
        os.close(fd)
"""


def wait_until(
    check: Callable[[], Any], what: str, why: Callable[[], str] = str, timeout: float = TIMEOUT
) -> Any:
    """Poll ``check`` until it returns something true (and return that); fail after
    ``timeout`` seconds, saying ``why()``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{why()}")
        time.sleep(0.05)


def runs(out: Path) -> list[int]:
    """The task numbers recorded so far, one per run (only whole lines)."""
    if not out.exists():
        return []
    text = out.read_text()
    return [int(x) for x in text[: text.rfind("\n") + 1].split()]


def unfinished(backend: SqlBackend, tasks: list[str]) -> str:
    """What became of the tasks that did not complete (for failure messages)."""
    bad = [r for r in backend.find_tasks(TaskFilter(ids=tasks)) if r.status != TaskStatus.completed]
    lines = [f"{len(bad)} task(s) not completed: {Counter(r.status.value for r in bad)}"]
    for rec in bad[:10]:
        log = " | ".join(ln.text for ln in backend.get_log(rec.id))[-600:]
        lines.append(
            f"{rec.name} ({rec.id}): {rec.status.value} {rec.status_message!r} "
            f"{rec.status_reason!r}; runtime {backend.get_runtime(rec.id)}; log: {log}"
        )
    return "\n".join(lines)


def new_task(backend: SqlBackend, out: Path, n: int) -> str:
    """A created (not queued) function step that records run ``n`` in ``out``."""
    params = []
    for key, value in (("out", str(out)), ("n", n)):
        text, kind = pv.encode(value)
        params.append(Param("kwargs", key, text, kind))
    script = {"kind": "function", "function": "record_run", "source": SOURCE, "returns": []}
    task = NewTask(name=f"run-{n}", project="many-agents", script=script, params=params)
    return backend.create_task(task).id


@pytest.fixture
def pg_agents(home: Path) -> Iterator[Callable[[str], AgentProc]]:
    """Start agents (on queue QUEUE) on the test's store; all are stopped at the end and their
    consoles printed (pytest shows them when the test fails)."""
    started: list[AgentProc] = []

    def start(name: str) -> AgentProc:
        agent = start_agent(home, [QUEUE], extra=["--poll", "0.02"], name=name)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()
    for agent in started:  # all but the lines of each task run and end
        lines = agent.output().splitlines()
        told = [ln for ln in lines if not ROUTINE.match(ln)]
        print(f"--- agent {agent.pid}: {len(lines) - len(told)} routine lines, and ---")
        print("\n".join(told))


@pytest.mark.parametrize("home", ["postgres+s3"], indirect=True)  # the team's store only
def test_four_agents_run_2000_tasks_exactly_once_across_a_database_restart(
    home: Path, pg_cluster: Any, pg_agents: Callable[[str], AgentProc]
) -> None:
    t0 = time.monotonic()

    def say(what: str) -> None:
        print(f"{time.monotonic() - t0:6.1f} s  {what}")

    backend = get_backend()
    assert isinstance(backend, SqlBackend) and not backend.is_sqlite
    backend.create_queue(QUEUE)
    out = home.parent / "runs.txt"
    procs = [pg_agents(f"many-{i}") for i in range(AGENTS)]
    with ThreadPoolExecutor(4) as pool:  # the agents start meanwhile
        tasks = list(pool.map(lambda n: new_task(backend, out, n), range(TASKS)))

    def registered() -> dict[int, str]:
        found = {a.pid: a.id for a in backend.get_agents()}
        return found if all(p.pid in found for p in procs) else {}

    agent_ids = set(wait_until(registered, "the agents to register", timeout=60).values())
    say(f"{TASKS} tasks created, {AGENTS} agents registered")
    with ThreadPoolExecutor(4) as pool:  # the agents take them as they come
        list(pool.map(lambda task_id: backend.enqueue(task_id, QUEUE), tasks))
    say(f"all queued ({len(runs(out))} ran meanwhile)")

    # the restart, once a quarter of the tasks ran; most are still waiting
    wait_until(lambda: len(runs(out)) >= RESTART_AFTER, f"{RESTART_AFTER} tasks to run")
    say(f"restarting the server after {len(runs(out))} runs")
    pg_cluster.restart(down_for=1.0)
    after = len(runs(out))
    say(f"the server is back, after {after} runs")
    assert after < TASKS, "the tasks were all done before the database came back"

    polls = itertools.count(1)

    def all_ended() -> bool:
        # the store is read once every task has run, else only every 40th look (2 s): a
        # task that ended without running ends the wait too
        if len(runs(out)) < TASKS and next(polls) % 40:
            return False
        return all(r.status in FINAL for r in backend.find_tasks(TaskFilter(ids=tasks)))

    wait_until(all_ended, f"the {TASKS} tasks to end", lambda: unfinished(backend, tasks))
    say("all ended")

    # every task ran exactly once, and nothing else ran
    assert Counter(runs(out)) == Counter(range(TASKS))
    claimed: Counter[str] = Counter()
    for proc in procs:
        claimed.update(re.findall(r"running task ([0-9a-f]+) ", proc.output()))
    assert claimed == Counter(tasks)
    # ... each by one of the four agents, and nothing is left behind
    records = backend.find_tasks(TaskFilter(ids=tasks, archived=None))
    assert Counter(r.status for r in records) == {TaskStatus.completed: TASKS}, unfinished(
        backend, tasks
    )
    ran_on = backend.get_runtimes(tasks, ["_agent"])
    by_agent = Counter(ran_on[t].get("_agent") for t in tasks)
    assert set(by_agent) == agent_ids, by_agent  # all took part, nobody else did
    assert backend.queue_tasks(QUEUE) == []
    assert {q.name: q.pending for q in backend.get_queues()}[QUEUE] == 0
    busy = backend.find_tasks(TaskFilter(status=[TaskStatus.queued, TaskStatus.in_progress]))
    assert busy == []
    # the agents lived through it, and are still registered
    assert [p.proc.poll() for p in procs] == [None] * AGENTS
    assert {a.id for a in backend.get_agents()} == agent_ids
    say(f"checked; tasks by agent: {sorted(by_agent.values())}")
