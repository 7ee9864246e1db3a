"""The pipeline graph's checks (stepline/pipeline/dag.py) and the same checks made by
``PipelineController.add_step`` / ``add_function_step`` when a step is defined."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from stepline.core.errors import NotFoundError, ValidationError
from stepline.pipeline.controller import PipelineController
from stepline.pipeline.dag import (
    FunctionSpec,
    Node,
    add_referenced_parents,
    children_of,
    descendants,
    find_cycle,
    validate,
)
from stepline.sdk.task import Task


def task_node(name: str, *parents: str, **params: Any) -> Node:
    return Node(name=name, base_task_id="base", parents=list(parents), parameters=dict(params))


def fn_node(
    name: str,
    *parents: str,
    returns: list[str] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> Node:
    spec = FunctionSpec(function_name="f", source="def f(): pass\n", kwargs=dict(kwargs or {}))
    spec.returns = list(returns or [])
    return Node(name=name, function=spec, parents=list(parents))


def graph(*nodes: Node) -> dict[str, Node]:
    return {n.name: n for n in nodes}


def error_of(nodes: dict[str, Node], args: tuple[str, ...] = ()) -> str:
    with pytest.raises(ValidationError) as info:
        validate(nodes, args)
    return str(info.value)


# -- validate -------------------------------------------------------------------------------------
def test_a_valid_graph_passes() -> None:
    nodes = graph(
        fn_node("prep", returns=["data", "n"], kwargs={"size": "${pipeline.size}"}),
        fn_node("train", "prep", kwargs={"data": "${prep.data}", "n": "${prep.n}"}),
        task_node(
            "report",
            "train",
            **{
                "General/id": "${train.id}",
                "General/art": "${prep.artifacts.data.url}",
                "General/p": "${train.parameters.kwargs/n}",
                "General/m": "${train.models.output.-1.url}",
            },
        ),
    )
    assert validate(nodes, ["size"]) is None


def test_unknown_parent() -> None:
    msg = error_of(graph(task_node("a"), task_node("b", "ghost")))
    assert "step 'b'" in msg
    assert "parent 'ghost' is not a step of this pipeline" in msg
    assert "(steps: a, b)" in msg


def test_self_parent() -> None:
    msg = error_of(graph(task_node("a", "a")))
    assert msg == "step 'a' lists itself as a parent"


def test_reference_to_an_unknown_step() -> None:
    msg = error_of(graph(task_node("a"), task_node("b", **{"General/x": "${ghost.id}"})))
    assert "step 'b'" in msg
    assert "${ghost.id}" in msg
    assert "unknown step 'ghost'" in msg
    assert "(steps: a, b)" in msg


def test_reference_to_the_step_itself() -> None:
    msg = error_of(graph(task_node("a", **{"General/x": "${a.id}"})))
    assert msg == "step 'a': ${a.id} refers to the step itself"


def test_unknown_return_name_of_a_function_step() -> None:
    nodes = graph(fn_node("a", returns=["x", "y"]), fn_node("b", "a", kwargs={"v": "${a.z}"}))
    msg = error_of(nodes)
    assert "step 'b'" in msg
    assert "${a.z}" in msg
    assert "step 'a' returns x, y" in msg


def test_return_reference_to_a_function_step_returning_nothing() -> None:
    nodes = graph(fn_node("a"), fn_node("b", "a", kwargs={"v": "${a.out}"}))
    assert "step 'a' returns nothing" in error_of(nodes)


def test_return_reference_to_a_task_step() -> None:
    nodes = graph(task_node("a"), fn_node("b", "a", kwargs={"v": "${a.out}"}))
    msg = error_of(nodes)
    assert "step 'b'" in msg
    assert "${a.out}" in msg
    assert "step 'a' is not a function step" in msg


def test_unknown_pipeline_argument() -> None:
    nodes = graph(task_node("a", **{"General/lr": "${pipeline.lr}"}))
    msg = error_of(nodes, ("batch", "epochs"))
    assert "step 'a'" in msg
    assert "${pipeline.lr}" in msg
    assert "(arguments: batch, epochs)" in msg
    assert "add_parameter" in msg
    assert "(arguments: none)" in error_of(nodes)
    validate(nodes, ("lr",))  # declared: fine


@pytest.mark.parametrize(
    ("node", "where"),
    [
        (task_node("b", **{"General/x": "${a}"}), "step 'b' parameter_override"),
        (Node("b", configurations={"cfg": "${a}"}), "step 'b' configuration_overrides"),
        (Node("b", task_overrides={"script.branch": "${a}"}), "step 'b' task_overrides"),
        (fn_node("b", kwargs={"v": ["${a}"]}), "step 'b' function_kwargs"),
    ],
)
def test_malformed_reference_in_each_input_names_the_input(node: Node, where: str) -> None:
    msg = error_of(graph(task_node("a"), node))
    assert msg.startswith(where + ": reference '${a}'")


@pytest.mark.parametrize(
    "node",
    [
        Node("b", configurations={"cfg": "${ghost.id}"}),
        Node("b", task_overrides={"script.branch": "${ghost.parameters.Args/branch}"}),
        fn_node("b", kwargs={"v": {"nested": "${ghost.artifacts.x.url}"}}),
    ],
)
def test_references_in_every_input_are_checked(node: Node) -> None:
    assert "unknown step 'ghost'" in error_of(graph(task_node("a"), node))


def test_cycle_with_its_path() -> None:
    nodes = graph(task_node("a", "c"), task_node("b", "a"), task_node("c", "b"), task_node("d"))
    msg = error_of(nodes)
    assert msg.startswith("the pipeline has a cycle: ")
    cycle = msg.removeprefix("the pipeline has a cycle: ").split(" -> ")
    assert cycle == find_cycle(nodes)
    assert_is_cycle(nodes, cycle)
    assert set(cycle) == {"a", "b", "c"}


# -- find_cycle -----------------------------------------------------------------------------------
def assert_is_cycle(nodes: dict[str, Node], cycle: list[str] | None) -> None:
    """``cycle`` runs along parent -> child edges and ends where it started."""
    assert cycle is not None
    assert len(cycle) >= 2
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1
    for parent, child in itertools.pairwise(cycle):
        assert parent in nodes[child].parents, (parent, child, cycle)


def test_no_cycle_in_a_diamond() -> None:
    nodes = graph(
        task_node("a"), task_node("b", "a"), task_node("c", "a"), task_node("d", "b", "c")
    )
    assert find_cycle(nodes) is None
    assert find_cycle({}) is None


def test_two_step_cycle() -> None:
    nodes = graph(task_node("a", "b"), task_node("b", "a"))
    cycle = find_cycle(nodes)
    assert_is_cycle(nodes, cycle)
    assert cycle is not None
    assert len(cycle) == 3


def test_self_loop_is_a_cycle() -> None:
    nodes = graph(task_node("a", "a"))
    assert find_cycle(nodes) == ["a", "a"]


def test_cycle_path_leaves_out_steps_leading_into_it() -> None:
    # x -> y -> (p -> q -> r -> p) -> z
    nodes = graph(
        task_node("z", "r"),
        task_node("x"),
        task_node("y", "x"),
        task_node("p", "y", "r"),
        task_node("q", "p"),
        task_node("r", "q"),
    )
    cycle = find_cycle(nodes)
    assert_is_cycle(nodes, cycle)
    assert set(cycle or []) == {"p", "q", "r"}


def test_unknown_parents_are_ignored_by_find_cycle() -> None:
    assert find_cycle(graph(task_node("a", "ghost"), task_node("b", "a"))) is None


def test_long_chain_has_no_recursion_limit() -> None:
    n = 5000
    nodes = graph(task_node("s0"), *(task_node(f"s{i}", f"s{i - 1}") for i in range(1, n)))
    assert find_cycle(nodes) is None
    nodes["s0"].parents.append(f"s{n - 1}")
    cycle = find_cycle(nodes)
    assert_is_cycle(nodes, cycle)
    assert len(cycle or []) == n + 1


# -- descendants, children ------------------------------------------------------------------------
DIAMOND = graph(
    task_node("a"),
    task_node("b", "a"),
    task_node("c", "a"),
    task_node("d", "b", "c"),
    task_node("e"),
)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a"], {"a", "b", "c", "d"}),
        (["b"], {"b", "d"}),
        (["d"], {"d"}),
        (["d", "e"], {"d", "e"}),
        (["b", "c"], {"b", "c", "d"}),
        (["ghost"], set()),
        ([], set()),
    ],
)
def test_descendants(names: list[str], expected: set[str]) -> None:
    assert descendants(DIAMOND, names) == expected


def test_descendants_terminates_on_a_cycle() -> None:
    nodes = graph(task_node("a", "b"), task_node("b", "a"), task_node("c", "b"))
    assert descendants(nodes, ["a"]) == {"a", "b", "c"}


def test_children_of() -> None:
    assert children_of(DIAMOND) == {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": [], "e": []}


# -- add_referenced_parents -----------------------------------------------------------------------
def test_referenced_steps_become_parents_in_order_once() -> None:
    node = fn_node("t", "given", kwargs={"x": "${k1.out}", "y": "${p1.id}"})
    node.parameters = {"General/a": "${p1.id}", "General/b": "${p2.artifacts.d.url} ${p1.id}"}
    node.configurations = {"cfg": "${c1.parameters.Args/x}"}
    node.task_overrides = {"script.branch": "${o1.models.output.0.name}"}
    add_referenced_parents(node)
    assert node.parents == ["given", "p1", "p2", "c1", "o1", "k1"]


def test_pipeline_and_self_references_are_not_parents() -> None:
    node = task_node("t", **{"General/a": "${pipeline.lr}", "General/b": "${t.id}"})
    add_referenced_parents(node)
    assert node.parents == []


def test_an_explicit_parent_is_not_added_twice() -> None:
    node = task_node("t", "a", **{"General/a": "${a.id}"})
    add_referenced_parents(node)
    assert node.parents == ["a"]


def test_add_referenced_parents_reports_malformed_references() -> None:
    node = task_node("t", **{"General/a": "${a.artifacts.x}"})
    with pytest.raises(ValidationError, match=r"step 't' parameter_override"):
        add_referenced_parents(node)


# -- through PipelineController -------------------------------------------------------------------
def make_data(size: int = 3, label: str = "x") -> list[int]:
    return list(range(size))


def train(data: list[int], lr: float) -> float:
    return sum(data) * lr


def takes_anything(**kwargs: Any) -> int:
    return len(kwargs)


def takes_nothing() -> int:
    return 1


def with_object_default(items: Any = (1, 2)) -> int:
    return len(items)


@pytest.fixture
def pipe(home: Path) -> PipelineController:
    return PipelineController(name="checks", project="tests/pipeline")


@pytest.fixture
def base_id(home: Path) -> str:
    return Task.create(project_name="tests/pipeline", task_name="base").id


def test_controller_accepts_a_valid_definition(pipe: PipelineController, base_id: str) -> None:
    pipe.add_parameter("lr", 0.1)
    assert pipe.add_function_step("prep", make_data, function_return=["data"])
    assert pipe.add_function_step(
        "train", train, function_kwargs={"data": "${prep.data}", "lr": "${pipeline.lr}"}
    )
    assert pipe.add_step(
        "report", base_task_id=base_id, parameter_override={"General/model": "${train.id}"}
    )
    dag = pipe.get_pipeline_dag()
    assert list(dag) == ["prep", "train", "report"]
    assert dag["train"].parents == ["prep"]
    assert dag["report"].parents == ["train"]
    assert dag["prep"].function is not None
    assert dag["prep"].function.kwargs == {"size": 3, "label": "x"}  # basic defaults filled in


def test_duplicate_step_name(pipe: PipelineController) -> None:
    pipe.add_function_step("prep", make_data)
    with pytest.raises(ValidationError, match=r"a step named 'prep' was already added.*unique"):
        pipe.add_function_step("prep", takes_nothing)
    assert pipe.get_pipeline_dag()["prep"].function.function_name == "make_data"  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["pipeline", "", "has space", "-dash", ".dot", "a/b"])
def test_bad_step_name(pipe: PipelineController, name: str) -> None:
    with pytest.raises(ValidationError, match="step name"):
        pipe.add_function_step(name, takes_nothing)
    assert pipe.get_pipeline_dag() == {}


@pytest.mark.parametrize("key", ["lr", "/lr"])
def test_parameter_override_key_without_section(
    pipe: PipelineController, base_id: str, key: str
) -> None:
    with pytest.raises(ValidationError) as info:
        pipe.add_step("s", base_task_id=base_id, parameter_override={key: 1})
    msg = str(info.value)
    assert "step 's'" in msg
    assert f"parameter_override key {key!r} needs a section" in msg
    assert f"'General/{key}'" in msg
    assert pipe.get_pipeline_dag() == {}


def test_malformed_reference_in_parameter_override(pipe: PipelineController, base_id: str) -> None:
    pipe.add_step("a", base_task_id=base_id)
    with pytest.raises(ValidationError) as info:
        pipe.add_step("b", base_task_id=base_id, parameter_override={"General/x": "${a}"})
    msg = str(info.value)
    assert "step 'b' parameter_override" in msg
    assert "'${a}'" in msg
    assert list(pipe.get_pipeline_dag()) == ["a"]


def test_unclosed_reference_in_function_kwargs(pipe: PipelineController) -> None:
    pipe.add_function_step("prep", make_data, function_return=["data"])
    with pytest.raises(ValidationError, match=r"step 'train' function_kwargs.*without its closing"):
        pipe.add_function_step("train", train, function_kwargs={"data": "${prep.data", "lr": 0.1})


def test_unknown_parent_in_controller(pipe: PipelineController) -> None:
    pipe.add_function_step("prep", make_data)
    with pytest.raises(ValidationError, match=r"parent 'ghost' is not a step.*steps: prep"):
        pipe.add_function_step("train", takes_anything, parents=["ghost"])
    assert list(pipe.get_pipeline_dag()) == ["prep"]


def test_reference_to_unknown_step_in_controller(pipe: PipelineController, base_id: str) -> None:
    pipe.add_step("a", base_task_id=base_id)
    with pytest.raises(ValidationError) as info:
        pipe.add_step("b", base_task_id=base_id, parameter_override={"General/x": "${ghost.id}"})
    msg = str(info.value)
    assert "step 'b'" in msg
    assert "'ghost'" in msg
    # the user wrote a reference, not a parent: the error should show the reference
    assert "${ghost.id}" in msg
    assert list(pipe.get_pipeline_dag()) == ["a"]


def test_a_failed_add_can_be_retried_under_the_same_name(pipe: PipelineController) -> None:
    with pytest.raises(ValidationError):
        pipe.add_function_step("prep", make_data, parents=["ghost"])
    assert pipe.add_function_step("prep", make_data)
    assert pipe.get_pipeline_dag()["prep"].parents == []


def test_unknown_return_name_in_controller(pipe: PipelineController) -> None:
    pipe.add_function_step("prep", make_data, function_return=["data"])
    with pytest.raises(ValidationError) as info:
        pipe.add_function_step(
            "train", train, function_kwargs={"data": "${prep.dataset}", "lr": 0.1}
        )
    msg = str(info.value)
    assert "step 'train'" in msg
    assert "${prep.dataset}" in msg
    assert "step 'prep' returns data" in msg


def test_return_reference_to_a_task_step_in_controller(
    pipe: PipelineController, base_id: str
) -> None:
    pipe.add_step("a", base_task_id=base_id)
    with pytest.raises(ValidationError, match=r"step 'a' is not a function step"):
        pipe.add_function_step("b", train, function_kwargs={"data": "${a.out}", "lr": 1})


def test_unknown_pipeline_argument_in_controller(pipe: PipelineController) -> None:
    with pytest.raises(ValidationError, match=r"\$\{pipeline.lr\} names no pipeline argument"):
        pipe.add_function_step("train", train, function_kwargs={"data": [], "lr": "${pipeline.lr}"})
    pipe.add_parameter("lr", 0.1)
    assert pipe.add_function_step(
        "train", train, function_kwargs={"data": [], "lr": "${pipeline.lr}"}
    )


def test_function_kwargs_naming_an_unknown_argument(pipe: PipelineController) -> None:
    with pytest.raises(ValidationError) as info:
        pipe.add_function_step(
            "train", train, function_kwargs={"data": [], "lr": 1, "momentum": 0.9}
        )
    msg = str(info.value)
    assert "step 'train'" in msg
    assert "train() takes no argument(s) momentum" in msg
    assert "(it takes data, lr)" in msg


def test_function_taking_kwargs_accepts_any_name(pipe: PipelineController) -> None:
    assert pipe.add_function_step("any", takes_anything, function_kwargs={"whatever": 1})
    assert pipe.get_pipeline_dag()["any"].function.kwargs == {"whatever": 1}  # type: ignore[union-attr]


def test_missing_required_argument(pipe: PipelineController) -> None:
    with pytest.raises(ValidationError) as info:
        pipe.add_function_step("train", train, function_kwargs={"data": []})
    msg = str(info.value)
    assert "step 'train'" in msg
    assert "function_kwargs lacks lr" in msg
    assert "train() needs" in msg


def test_non_basic_defaults_are_not_copied_into_kwargs(pipe: PipelineController) -> None:
    pipe.add_function_step("count", with_object_default)
    assert pipe.get_pipeline_dag()["count"].function.kwargs == {}  # type: ignore[union-attr]


def test_lambda_is_refused(pipe: PipelineController) -> None:
    with pytest.raises(ValidationError, match="cannot be a lambda"):
        pipe.add_function_step("l", lambda: 1)
    assert pipe.get_pipeline_dag() == {}


def test_builtin_is_refused(pipe: PipelineController) -> None:
    with pytest.raises(ValidationError, match="needs a Python function"):
        pipe.add_function_step("b", len)


def test_base_task_by_project_and_name_that_does_not_exist(pipe: PipelineController) -> None:
    with pytest.raises(NotFoundError) as info:
        pipe.add_step("s", base_task_project="nowhere", base_task_name="nothing")
    msg = str(info.value)
    assert "step 's'" in msg
    assert "'nothing'" in msg
    assert "'nowhere'" in msg
    assert pipe.get_pipeline_dag() == {}


def test_base_task_by_project_and_name(pipe: PipelineController, base_id: str) -> None:
    assert pipe.add_step("s", base_task_project="tests/pipeline", base_task_name="base")
    assert pipe.get_pipeline_dag()["s"].base_task_id == base_id


def test_base_task_id_that_does_not_exist(pipe: PipelineController) -> None:
    with pytest.raises(NotFoundError):
        pipe.add_step("s", base_task_id="0" * 32)
    assert pipe.get_pipeline_dag() == {}


def test_step_without_any_base_task(pipe: PipelineController) -> None:
    with pytest.raises(ValidationError, match="needs base_task_id"):
        pipe.add_step("s")


def test_force_recompute_unknown_step(pipe: PipelineController) -> None:
    with pytest.raises(ValidationError, match="no step named 'ghost'"):
        pipe.force_recompute("ghost")


def test_force_recompute_marks_descendants(pipe: PipelineController) -> None:
    pipe.add_function_step("a", make_data, function_return=["data"])
    pipe.add_function_step("b", train, function_kwargs={"data": "${a.data}", "lr": 1})
    pipe.add_function_step("c", takes_nothing)
    pipe.force_recompute("a")
    flags = {n: node.force_recompute for n, node in pipe.get_pipeline_dag().items()}
    assert flags == {"a": True, "b": True, "c": False}
