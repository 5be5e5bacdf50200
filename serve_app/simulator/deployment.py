"""The simulator as a Ray Serve application.

A serve config YAML runs it with `import_path: serve_app.simulator.deployment:build_app` and the
SimulatorConfig fields as `args`. Counters (/sim/stats) and quota windows are per replica, so keep the
deployment at one replica (the default here) for them to be global; `max_ongoing_requests` is high because
the simulator stands for Azure, whose own concurrency is not what is being tested.
"""

from __future__ import annotations

from typing import Any, cast

from ray import serve
from ray.serve import Application
from starlette.applications import Starlette

from .app import create_app
from .config import SimulatorConfig


@serve.deployment(num_replicas=1, max_ongoing_requests=100_000)
@serve.ingress()
class AzureOpenAISimulator:
    def __init__(self, config: dict[str, Any]) -> None:
        self._config = SimulatorConfig.model_validate(config)

    def __serve_build_asgi_app__(self) -> Starlette:
        return create_app(self._config)


def build_app(args: dict[str, Any]) -> Application:
    # Validate while building, so a bad YAML fails at deploy time rather than in a replica.
    config = SimulatorConfig.model_validate(args)
    # mypy does not apply class decorators; at runtime the class is a serve.Deployment.
    return cast(serve.Deployment, AzureOpenAISimulator).bind(config.model_dump(mode="json"))
