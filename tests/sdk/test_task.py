from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from stepline.core.errors import (
    InvalidTransitionError,
    NotFoundError,
    TaskNotFoundError,
    ValidationError,
)
from stepline.sdk.task import Task


def draft(name: str = "step", project: str = "p") -> Task:
    return Task.create(project_name=project, task_name=name)


def test_create_get_and_status_path(home: Path) -> None:
    task = draft()
    assert task.status == "created"
    assert Task.get_task(task.id) == task
    task.mark_started()
    task.set_progress(40)
    task.mark_completed()
    got = Task.get_task(task.id)
    assert got.status == "completed"
    assert got.get_progress() == 40
    assert got.started is not None and got.completed is not None
    assert got.completed >= got.started


def test_a_completed_task_cannot_be_started_again(home: Path) -> None:
    task = draft()
    task.mark_started()
    task.mark_completed()
    with pytest.raises(InvalidTransitionError, match=task.id) as err:
        task.mark_started()
    assert "reset" in str(err.value)
    assert task.status == "completed"
    task.reset()
    task.mark_started()
    assert task.status == "in_progress"


def test_unknown_task_id_is_a_clear_error(home: Path) -> None:
    with pytest.raises(TaskNotFoundError, match="deadbeef"):
        Task.get_task("deadbeef")


def test_get_task_by_project_and_name_returns_the_newest(home: Path) -> None:
    draft("a")
    second = draft("a")
    draft("ab")
    assert Task.get_task(project_name="p", task_name="a") == second
    with pytest.raises(NotFoundError, match="'zzz'"):
        Task.get_task(project_name="p", task_name="zzz")


def test_get_tasks_filters(home: Path) -> None:
    a = draft("train-1", "proj/sub")
    b = draft("train-2", "proj/sub")
    c = draft("eval", "proj/sub")
    other = draft("train-3", "other")
    a.add_tags(["best", "v1"])
    b.add_tags("v1")
    b.mark_started()
    c.set_archived(True)
    ids = lambda ts: {t.id for t in ts}  # noqa: E731
    assert ids(Task.get_tasks(project_name="proj/sub")) == {a.id, b.id, c.id}
    assert ids(Task.get_tasks(project_name="proj/sub", allow_archived=False)) == {a.id, b.id}
    assert ids(Task.get_tasks(task_name="train")) == {a.id, b.id, other.id}
    assert ids(Task.get_tasks(tags=["v1"])) == {a.id, b.id}
    assert ids(Task.get_tasks(tags=["v1", "-best"])) == {b.id}
    assert ids(Task.get_tasks(task_filter={"status": ["in_progress"]})) == {b.id}
    assert ids(Task.get_tasks(task_ids=[a.id, other.id])) == {a.id, other.id}
    newest = Task.get_tasks(
        project_name="proj/sub", task_filter={"order_by": ["-created"], "limit": 1}
    )
    assert ids(newest) == {c.id}
    with pytest.raises(ValidationError, match="unsupported task_filter"):
        Task.get_tasks(task_filter={"colour": "red"})


def test_clone_copies_inputs_not_outputs(home: Path) -> None:
    src = draft("base")
    src.set_parameters({"General/lr": 0.1, "Data/path": "/d"})
    src.connect_configuration({"layers": [1, 2]}, name="model")
    src.add_tags("base")
    src.upload_artifact("out", {"a": 1})
    src.get_logger().report_scalar("m", "s", 1.0, 0)
    src.flush()
    clone = Task.clone(src, name="copy", comment="c")
    assert clone.status == "created"
    assert clone.name == "copy" and clone.comment == "c" and clone.parent == src.id
    assert clone.get_parameters(cast=True) == {"General/lr": 0.1, "Data/path": "/d"}
    assert clone.get_configuration_object_as_dict("model") == {"layers": [1, 2]}
    assert clone.get_tags() == ["base"]
    assert len(clone.artifacts) == 0
    assert clone.get_last_scalar_metrics() == {}


def test_parameters_keep_their_types(home: Path) -> None:
    task = draft()
    task.connect({"lr": 0.1, "n": 3, "flag": True, "names": ["a"], "opt": None})
    assert task.get_parameters() == {
        "General/lr": "0.1",
        "General/n": "3",
        "General/flag": "True",
        "General/names": '["a"]',
        "General/opt": "",
    }
    assert task.get_parameters(cast=True) == {
        "General/lr": 0.1,
        "General/n": 3,
        "General/flag": True,
        "General/names": ["a"],
        "General/opt": None,
    }
    task.set_parameter("General/n", "7")  # text for an int keeps the int type
    assert task.get_parameter("General/n", cast=True) == 7
    task.set_parameter("count", 5)  # no section: General
    assert task.get_parameter("General/count", cast=True) == 5
    assert task.get_parameter("General/missing", default="d") == "d"
    task.update_parameters({"Other/x": 1})
    assert "General/lr" in task.get_parameters()
    task.set_parameters({"Only/y": 2})  # replaces all
    assert task.get_parameters(cast=True) == {"Only/y": 2}
    assert task.get_parameters_as_dict(cast=True) == {"Only": {"y": 2}}
    task.delete_parameter("Only/y")
    assert task.get_parameters() == {}


def test_connect_namespace_and_object(home: Path) -> None:
    task = draft()
    ns = argparse.Namespace(batch=32, model="resnet")
    task.connect(ns)

    class Conf:
        def __init__(self) -> None:
            self.depth = 4
            self.rate = 0.5
            self._private = "hidden"

    task.connect(Conf(), name="Conf")
    assert task.get_parameters(cast=True) == {
        "Args/batch": 32,
        "Args/model": "resnet",
        "Conf/depth": 4,
        "Conf/rate": 0.5,
    }
    with pytest.raises(ValidationError, match="wrap a single value"):
        task.connect(5)
    with pytest.raises(ValidationError, match="cannot hold '/'"):
        task.connect({"a": 1}, name="a/b")


def test_connect_from_the_store_overrides_defaults(home: Path) -> None:
    task = draft()
    task.set_parameters({"General/lr": "0.5", "General/extra": 9})
    task._from_store = True  # as when a runner executes the stored task
    values = {"lr": 0.1, "epochs": 3}
    assert task.connect(values) is values
    assert values == {"lr": 0.5, "epochs": 3, "extra": 9}
    assert task.get_parameters(cast=True)["General/epochs"] == 3  # code-only keys are stored
    task.set_parameter("General/epochs", "many", value_type="str")
    with pytest.raises(ValidationError, match="General/epochs"):
        task.connect({"epochs": 3})


def test_configuration_objects(home: Path, tmp_path: Path) -> None:
    task = draft()
    cfg = {"optimizer": {"name": "adam"}, "layers": [64, 64]}
    assert task.connect_configuration(cfg, name="model", description="net") is cfg
    assert task.get_configuration_object_as_dict("model") == cfg
    path = tmp_path / "conf.yaml"
    path.write_text("a: 1\n")
    assert task.connect_configuration(path, name="file") == path
    assert task.get_configuration_object("file") == "a: 1\n"
    # run from the store, the stored text comes back
    task.set_configuration_object("file", config_text="a: 2\n")
    task.set_configuration_object("model", config_dict={"layers": [1]})
    task._from_store = True
    again = {"layers": [64]}
    task.connect_configuration(again, name="model")
    assert again == {"layers": [1]}
    local = task.connect_configuration(path, name="file")
    assert Path(local).read_text() == "a: 2\n"
    assert set(task.get_configuration_objects()) == {"model", "file"}


def test_tags_comment_parent_archive_publish(home: Path) -> None:
    task = draft()
    parent = draft("parent")
    task.add_tags(["x", "y"])
    task.add_tags("x")
    assert task.get_tags() == ["x", "y"]
    task.set_comment("hello")
    task.set_parent(parent)
    task.set_name("renamed")
    again = Task.get_task(task.id)
    assert (again.comment, again.parent, again.name) == ("hello", parent.id, "renamed")
    with pytest.raises(ValidationError, match="only a completed task"):
        task.publish()
    task.mark_started()
    task.mark_completed()
    task.publish()
    task.set_archived(True)
    assert Task.get_task(task.id).data.published
    assert task.get_archived()
    task.move_to_project("elsewhere")
    assert Task.get_task(task.id).get_project_name() == "elsewhere"


def test_progress_and_properties(home: Path) -> None:
    task = draft()
    assert task.get_progress() is None
    with pytest.raises(ValidationError, match="0..100"):
        task.set_progress(101)
    task.set_user_properties(owner="me", run=3)
    assert task.get_user_properties() == {"owner": "me", "run": "3"}


def test_delete_removes_the_task_and_its_files(home: Path) -> None:
    task = draft()
    task.upload_artifact("blob", b"123")
    path = Path(task.artifacts["blob"].get_local_copy())
    assert path.exists()
    task.delete()
    assert not path.exists()
    with pytest.raises(TaskNotFoundError):
        Task.get_task(task.id)


def test_init_needs_names_when_not_run_by_stepline(home: Path) -> None:
    with pytest.raises(ValidationError, match="project_name and task_name"):
        Task.init()
