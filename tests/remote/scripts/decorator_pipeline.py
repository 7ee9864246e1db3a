"""A decorator pipeline in the default (remote) mode: calling it stores and queues it on
``services`` and this process exits; an agent of ``services`` runs this script again, whose
logic sends ``total`` to ``cpu`` and the other components to ``default``."""

from stepline.automation.controller import PipelineDecorator


@PipelineDecorator.component(return_values=["data"])
def make_data(n):
    return {"values": list(range(n)), "n": n}


@PipelineDecorator.component(return_values=["value"], execution_queue="cpu")
def total(data, scale):
    return sum(data["values"]) * scale


@PipelineDecorator.component(return_values=["text"])
def describe(data, value):
    return f"{len(data['values'])}:{value}"


@PipelineDecorator.pipeline(
    name="remote-deco", project="remote-tests", version="1.0.0", return_value="result"
)
def run_pipeline(n: int = 4):
    data = make_data(n)
    value = total(data, 10)
    text = describe(data, value)
    return f"{text}|{value + 1}"


if __name__ == "__main__":
    run_pipeline(n=5)
