"""A PipelineController sent to the ``services`` queue: ``pipe.start()`` stores and queues it
and this process exits; an agent of ``services`` runs this script again as the controller,
and the steps go to ``cpu`` (``total``) and ``default`` (the others)."""

from stepline.pipeline.controller import PipelineController


def make_data(n):
    return {"values": list(range(n)), "n": n}


def total(data, scale):
    return sum(data["values"]) * scale


def describe(data, value):
    return f"{len(data['values'])}:{value}"


pipe = PipelineController(name="remote-three", project="remote-tests", version="1.0.0")
pipe.add_parameter("n", 4, param_type="int")
pipe.add_function_step(
    "make", make_data, function_kwargs={"n": "${pipeline.n}"}, function_return=["data"]
)
pipe.add_function_step(
    "total",
    total,
    function_kwargs={"data": "${make.data}", "scale": 10},
    function_return=["value"],
    execution_queue="cpu",
)
pipe.add_function_step(
    "describe",
    describe,
    function_kwargs={"data": "${make.data}", "value": "${total.value}"},
    function_return=["text"],
)
pipe.start(queue="services")
