"""An Azure OpenAI Chat Completions simulator: the upstream for tests and benchmarks, and the default
backend when no credentials are configured.

    from serve_app.simulator import SimulatorConfig, create_app
    app = create_app(SimulatorConfig(latency_s=0.05).with_deployments("my-gpt"))

Trigger phrases (see `triggers`) in the last user message inject failures; /sim/ endpoints expose counters
and change settings at runtime.
"""

from .app import create_app
from .config import DeploymentSpec, SimulatorConfig
from .faults import Fault
from .standalone import BackgroundServer, BackgroundSimulator, run
from .triggers import (
    CONTENT_FILTER_OUTPUT,
    CONTENT_FILTER_PROMPT,
    DROP_MID_STREAM,
    ERROR_MID_STREAM,
    HANG,
    PARALLEL_TOOLS,
    REFUSAL,
    RESET_MID_BODY,
    sleep_trigger,
    status_trigger,
    tokens_trigger,
)

__all__ = [
    "CONTENT_FILTER_OUTPUT",
    "CONTENT_FILTER_PROMPT",
    "DROP_MID_STREAM",
    "ERROR_MID_STREAM",
    "HANG",
    "PARALLEL_TOOLS",
    "REFUSAL",
    "RESET_MID_BODY",
    "BackgroundServer",
    "BackgroundSimulator",
    "DeploymentSpec",
    "Fault",
    "SimulatorConfig",
    "create_app",
    "run",
    "sleep_trigger",
    "status_trigger",
    "tokens_trigger",
]
