"""The agent tests run on the embedded store (SQLite and a folder), and those whose outcome
depends on the store (claims, aborts, dead agents, code and output through it) also on a team's
store: PostgreSQL and the S3-compatible server, both real servers started by the fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import use_team_store

#: the tests that also run on PostgreSQL + S3 (the others test the agent's own machinery:
#: job slots, environments, resource reports)
ON_TEAM_STORE = {
    "test_two_agents_run_each_of_200_tasks_exactly_once",
    "test_stopping_a_running_step_ends_its_process_tree",
    "test_a_killed_agents_task_is_failed_naming_the_agent",
    "test_a_killed_agents_task_asking_for_it_is_requeued_and_completed",
    "test_a_function_step_runs_without_its_module_folder",
    "test_a_running_steps_output_reaches_its_log_live",
    "test_listings_show_the_live_agent_and_sigterm_stops_its_task",
    "test_a_controller_killed_on_its_agent_is_interrupted_and_its_resume_takes_over_its_steps",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "home" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        if "home" in str(mark.args[0]):
            return  # the test chose its store itself
    kinds = ["sqlite", "postgres+s3"] if metafunc.function.__name__ in ON_TEAM_STORE else ["sqlite"]
    metafunc.parametrize("home", kinds, indirect=True)


@pytest.fixture
def home(request: pytest.FixtureRequest, home: Path) -> Path:
    if getattr(request, "param", "sqlite") != "sqlite":
        use_team_store(request)
    return home
