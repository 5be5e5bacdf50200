"""NeMo Gym drives it: our model server as a NeMo Gym `responses_api_models` component.

`gym env start` runs each configured server's `entrypoint` in a virtual environment of its own,
hands it the whole global config (`NEMO_GYM_CONFIG_DICT`, YAML) and its own top-level key
(`NEMO_GYM_CONFIG_PATH`), and counts it ready once anything answers `GET http://host:port/`.
Agents then call `http://host:port/v1/responses` with host and port from that config.

How our Serve application fits that (README, "With NeMo Gym", says why each choice):

- The component's entrypoint (`nemo_gym_root/responses_api_models/azure_openai_ray_serve/app.py`)
  joins the Ray cluster gym started or joined, and runs a `ModelServerFront` in an actor there,
  on its own node. The actor runs on the cluster's Python, where this package is installed beside
  nemo-gym, so the entrypoint's own venv (built by gym) needs nothing but Ray.
- The front deploys the model server as a Serve application named after the server (one app
  per server, added imperatively: a declarative deploy replaces every other app of the cluster),
  waits until it runs and answers through its deployment handle, and only then listens on the
  server's host and port, because gym takes any answer, an early 404 too, for readiness.
- Requests go from the front to the replicas through the handle, so no Serve HTTP proxy is
  involved: one Serve HTTP port could not stand for several NeMo Gym ports anyway. So the front
  does what HAProxy does on the HTTP path when a replica dies with requests on it: it sends each
  one that has no answer yet (most of them still in that replica's queue) to another replica.
"""

import asyncio
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from omegaconf import DictConfig, OmegaConf
from pydantic import Field
from starlette.routing import Route

from .config import (
    SIMULATED_DEPLOYMENT,
    SIMULATOR_KEY,
    AzureModelConfig,
    ConfigError,
    fill_with_simulator,
    resolve_tree,
    validate_model,
)
from .errors import ReplicaUnavailable
from .http import (
    Gate,
    chat_sse,
    json_response,
    openai_app,
    openai_routes,
    read_json,
    response_sse,
    stream_answer,
    wants_stream,
)

KIND = "azure_openai_ray_serve"
_READY_TIMEOUT_S = 300.0
# Tries of a request whose replica dies before answering, each on the replicas Serve still routes to.
REPLICA_ATTEMPTS = 3
_REPLICA_RETRY_AFTER_S = 5


def component_root() -> Path:
    """The folder to name in `NEMO_GYM_EXTRA_ROOTS`: it holds `responses_api_models/<KIND>/`."""
    return Path(__file__).resolve().parent / "nemo_gym_root"


class GymModelServer(AzureModelConfig):
    """One `azure_openai_ray_serve` server as NeMo Gym configures it: the `azure_openai_model`
    contract, the keys gym itself sets on every server, and how to run it on Serve."""

    entrypoint: str
    host: str
    port: int = Field(ge=1, le=65535)
    num_replicas: int = Field(default=1, ge=1, description="Serve replicas; they share num_concurrent_requests")
    simulate: bool = Field(default=False, description="Answer from the built-in Azure simulator")
    # Gym sets these on every server; neither changes what this one does.
    domain: str | None = None
    datasets: Any = None
    num_workers: int | None = Field(default=None, description="Gym's worker processes: use num_replicas instead")


def gym_model_server(global_config_yaml: str, name: str) -> GymModelServer:
    """Read server `name` from gym's global config, with the simulator filled in when it asks for it."""
    tree = OmegaConf.create(global_config_yaml)
    where = f"{name}.responses_api_models.{KIND}"
    section = OmegaConf.select(tree, where)
    if not isinstance(section, DictConfig):
        raise ConfigError([f"{where}: not in the global config"])
    if section.get("simulate") is True:
        # The simulator's address is known once it runs (ModelServerFront.start).
        fill_with_simulator(section, "http://127.0.0.1")
    try:
        data = resolve_tree(section)
    except ConfigError as exc:
        raise ConfigError([f"{where}.{p}" for p in exc.problems]) from None
    config: GymModelServer = validate_model(GymModelServer, data, where)
    if config.num_workers not in (None, 1):
        raise ConfigError([f"{where}.num_workers: replicas share the budget; set num_replicas instead"])
    budgets = {"": config.num_concurrent_requests} | {
        f"upstreams.{m.name}.": m.num_concurrent_requests for m in config.upstreams
    }
    low = [f"{where}.{at}num_concurrent_requests" for at, n in budgets.items() if n < config.num_replicas]
    if low:
        raise ConfigError([f"{path}: below num_replicas; some would never call Azure" for path in low])
    return config


class ModelServerFront:
    """Deploys one model server on Serve and answers for it on gym's host and port (in the Front actor)."""

    def __init__(self, name: str, global_config_yaml: str) -> None:
        self.name = name
        self.config = gym_model_server(global_config_yaml, name)
        self._server: Any = None
        self._serving: asyncio.Task[None] | None = None
        self._simulator: Any = None

    async def start(self) -> str:
        from ray import serve

        config = self.config
        if config.simulate:
            config = self._start_simulator()
        await asyncio.to_thread(self._deploy, config)
        handle = serve.get_app_handle(self.name)
        await handle.list_models.remote()  # routable: a call reaches a replica and comes back
        self._server = _uvicorn(_front_app(handle, config), self.config.host, self.config.port)
        self._serving = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            if self._serving.done():
                self._serving.result()  # the port could not be bound: raise why
                raise RuntimeError(f"{self.name}: the HTTP front stopped before it started")
            await asyncio.sleep(0.05)
        return f"http://{self.config.host}:{self.config.port}"

    async def stop(self) -> None:
        from ray import serve

        # gym gives a server one second to exit: ask Serve to remove the app first, without waiting for it.
        serve.delete(self.name, _blocking=False)
        if self._server is not None:
            self._server.should_exit = True
            if self._serving is not None:
                with suppress(Exception):
                    await asyncio.wait_for(self._serving, timeout=5)
        if self._simulator is not None:
            self._simulator.stop()

    def _start_simulator(self) -> GymModelServer:
        from .simulator import BackgroundSimulator, SimulatorConfig

        config = SimulatorConfig(
            api_keys=(SIMULATOR_KEY,), deployments={self.config.openai_model: SIMULATED_DEPLOYMENT}
        )
        self._simulator = BackgroundSimulator(config)
        self._simulator.start()
        return self.config.model_copy(update={"openai_base_url": self._simulator.base_url})

    def _deploy(self, config: GymModelServer) -> None:
        from ray import serve
        from ray.exceptions import ActorAlreadyExistsError

        from . import cluster
        from .serve_config import model_server_app, model_server_keys
        from .server import AzureModelServer

        app = model_server_app(self.name, config, num_replicas=config.num_replicas)
        options = {k: v for k, v in app["deployments"][0].items() if k != "name"}
        # The key reaches the replicas in their environment, as the CLI's does; never in args.
        env = model_server_keys(self.name, config)
        options["ray_actor_options"] = {"num_cpus": 0, "runtime_env": {"env_vars": env}}
        # gym starts its servers at once: another server's front may have started Serve a moment ago.
        with suppress(ActorAlreadyExistsError):
            serve.start(proxy_location="Disabled")
        bound = AzureModelServer.options(**options).bind(app["args"])  # type: ignore[attr-defined]  # @serve.deployment
        serve.run(bound, name=self.name, route_prefix=None, blocking=False)
        cluster.wait_running([self.name], timeout_s=_READY_TIMEOUT_S)


def _uvicorn(app: Any, host: str, port: int) -> Any:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config)


def _front_app(handle: Any, config: GymModelServer) -> FastAPI:
    """gym's view of the model server: `GET /` once ready, and the OpenAI routes through the handle."""
    gate = Gate(config.inbound_keys())
    streaming = handle.options(stream=True)

    async def call(request: Request, method: str) -> Response:
        gate.check(request)
        body = await read_json(request, config.max_request_bytes)
        # Azure's headers (quota, region) stay behind: a handle call cannot fill the front's dict.
        if not wants_stream(body):
            return json_response(
                await _again_if_the_replica_died(
                    lambda: _answer_unless_client_leaves(request, getattr(handle, method).remote(body))
                )
            )
        items = _stream_unless_client_leaves(request, lambda: getattr(streaming, f"{method}_stream").remote(body))
        return stream_answer(
            items,
            await anext(items, None),
            chat_sse if method == "create_chat_completion" else response_sse,
            stall_s=config.timeouts.stalled_reader_s,
            headers={},
        )

    async def ready(request: Request) -> Response:
        return json_response({"status": "ready", "model": config.openai_model})

    async def responses(request: Request) -> Response:
        return await call(request, "create_response")

    async def chat_completions(request: Request) -> Response:
        return await call(request, "create_chat_completion")

    async def models(request: Request) -> Response:
        gate.check(request)
        return json_response(await handle.list_models.remote())

    routes = [Route("/", ready, methods=["GET"]), *openai_routes(responses, chat_completions, models)]
    return openai_app(routes, request_id=lambda: uuid.uuid4().hex)  # the replica logs its own id too


async def _unless_client_leaves(request: Any, call: Any, cancel: Callable[[], None]) -> Any:
    """What `call` returns; if the client leaves first, the call is cancelled at the replica, which frees
    its upstream slot (Serve's own proxy does the same for its routes; here nothing else would)."""
    task = asyncio.ensure_future(call)
    left = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
    if not task.done():
        cancel()
        task.cancel()
        raise asyncio.CancelledError
    return task.result()


async def _answer_unless_client_leaves(request: Any, response: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await _unless_client_leaves(request, response, response.cancel)
    return answer


async def _disconnected(request: Any) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _again_if_the_replica_died(call: Callable[[], Awaitable[Any]]) -> Any:
    """`call()`, made again while the replica it reached dies before answering: up to `REPLICA_ATTEMPTS`
    times, then a 502 in the envelope. (A call already at Azure is made again too; its answer died.)"""
    from ray.exceptions import RayActorError

    for _ in range(REPLICA_ATTEMPTS - 1):
        with suppress(RayActorError):
            return await call()
    try:
        return await call()
    except RayActorError:
        raise ReplicaUnavailable(
            f"The model server replica stopped before it answered, {REPLICA_ATTEMPTS} times. Retry the request.",
            code="replica_unavailable",
            headers={"retry-after": str(_REPLICA_RETRY_AFTER_S)},
        ) from None


async def _stream_unless_client_leaves(
    request: Any, start: Callable[[], Any]
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """A handle's stream (`start()`, batches of events) as an async generator: started again on another
    replica if its replica dies before the first event, cancelled at the replica if the client leaves before
    the first event (that is, while Azure has not answered) or when the answer is closed."""
    events: Any = None

    async def first() -> Any:
        nonlocal events
        events = start()
        return await _unless_client_leaves(request, events.__anext__(), events.cancel)

    try:
        yield await _again_if_the_replica_died(first)
        async for event in events:
            yield event
    except StopAsyncIteration:
        return
    finally:
        if events is not None:
            events.cancel()
