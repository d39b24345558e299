"""The client front end: send requests to a model spread over a fleet, get results, KPIs.

::

    from splitmq.client import Client, ClientConfig

    with Client("mqtt://127.0.0.1:1883", config=ClientConfig(model="digits")) as client:
        result = client.infer(image)
        print(result.top(3), [entry.agent_id for entry in result.trace])

``splitmq infer MODEL INPUT...`` does the same from a shell (see ``infer_cli``).
"""

from splitmq.client.client import Client
from splitmq.client.config import ClientConfig
from splitmq.client.errors import DeadlineError, InferenceError, InputError, PlanRefusedError
from splitmq.client.inputs import ImageInput, fit_inputs, fit_tensor, load_image, load_inputs
from splitmq.client.records import AttemptRecord, RequestRecord
from splitmq.client.result import InferenceResult

__all__ = [
    "AttemptRecord",
    "Client",
    "ClientConfig",
    "DeadlineError",
    "ImageInput",
    "InferenceError",
    "InferenceResult",
    "InputError",
    "PlanRefusedError",
    "RequestRecord",
    "fit_inputs",
    "fit_tensor",
    "load_image",
    "load_inputs",
]
