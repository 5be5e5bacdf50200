"""The Ray Serve deployment: wires translator and Azure client, and owns concurrency.

Data flows one way: request -> translate -> upstream (in a slot of the pool) -> translate back ->
response. Every error is an `OpenAIError`, turned into HTTP in one place (`http.error_response`).

Concurrency: each upstream's limiter holds exactly the share of that upstream's budget its ledger
grants (budget.py); the pool of upstreams (upstreams.py) chooses among them and is the queue.
Serve admits every request to the replica at once
(`max_ongoing_requests` is set far above any share), because under HAProxy ingress nothing
queues in front of the replica anyway, and because only our queue can answer "full" with a 429
in the OpenAI envelope and let calls that never reach Azure (`/v1/models`) skip it.

Streams hold their upstream slot for as long as they run. They are opened before the HTTP
answer is committed: Azure's status and first frame are awaited first, so an error before the
first byte is a normal HTTP error, and only later errors travel in-band.
"""

import asyncio
import gc
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, Generic, Self, TypeVar, cast

from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve
from ray.serve import Application
from ray.serve.context import _get_serve_request_context
from ray.serve.schema import ReplicaRank

from . import jsonwire
from .azure import AzureClient, OpenedStream
from .budget import BudgetMember, LeaveFn, ray_ledger
from .config import BudgetConfig, ModelServerArgs, UpstreamSpec, validate_model
from .deployment_constants import DEFAULT_SHUTDOWN_S, MAX_ONGOING_REQUESTS
from .entra import EntraTokens
from .errors import OpenAIError, Overloaded, RefusedParameter, Unavailable, UpstreamError
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
from .limiter import Limiter
from .schemas import ChatRequest, ResponseSettings, ResponsesRequest, parse
from .telemetry import RequestRecord, Telemetry, request_log_path
from .translate import chat, to_chat_request, to_response, truncation
from .translate.request import responses_field
from .translate.response import new_id
from .translate.stream import ResponseEventStream, read_chunk
from .translate.tools import ToolMap
from .upstreams import AllClosed, Pool, QueueFull, QueueTimeout, Upstream, hand_over_rule

# Python's collector runs every 700 net new container objects. Under load that was 700 times a
# second in a replica, finding no cycles to free, for about a tenth of the replica's CPU
# (py-spy; tests/benchmark/RESULTS.md prices it as the `defaultgc` variant). Requests here make
# no reference cycles worth collecting that often, and the replica process is ours alone.
GC_GEN0_THRESHOLD = 20_000
# What a stopping server asks new callers to wait: long enough for a restart or another replica to take over.
DRAINING_RETRY_AFTER_S = 5

T = TypeVar("T")
C = TypeVar("C", bound=dict[str, Any])  # a stream chunk, as read
S = TypeVar("S")  # a stream chunk, as shown


def tune_collector() -> None:
    """The replica's collector: run less often (GC_GEN0_THRESHOLD), and never over what the replica was
    built with. That (Ray, Serve, FastAPI, pydantic's validators, this app: about 170,000 objects) lives as
    long as the process; frozen, a full collection in a replica under load took 1.1 ms instead of 109, a
    pause of every call in flight (gc callbacks, 64 clients)."""
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    gc.freeze()


def _request_id() -> str:
    return _get_serve_request_context().request_id


def _carries_output(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("refusal") or delta.get("tool_calls"):
            return True
    return False


class _InResponsesTerms:
    """Errors about Chat Completions parameters, renamed to the Responses fields the client sent.

    Context managers on every request's path are classes, not `asynccontextmanager` generators: a
    generator, its frame and the wrapper cost a replica measurably more per request."""

    async def __aenter__(self) -> None:
        pass

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if isinstance(exc, RefusedParameter):
            raise exc.named(responses_field(exc.field)) from None
        if isinstance(exc, UpstreamError) and exc.status == 400 and exc.param is not None:
            exc.param = responses_field(exc.param)


_in_responses_terms = _InResponsesTerms()


class _Recorded:
    """The request's record: its error status (if any) is noted, and it is reported once, at the end."""

    __slots__ = ("_record", "_telemetry")

    def __init__(self, telemetry: Telemetry, endpoint: str, stream: bool) -> None:
        self._telemetry = telemetry
        self._record = RequestRecord(_get_serve_request_context().request_id, endpoint, stream)

    async def __aenter__(self) -> RequestRecord:
        return self._record

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        record = self._record
        if isinstance(exc, OpenAIError):
            record.status, record.error_code = exc.status, exc.code
        elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            record.status, record.outcome = 499, "client_closed"
        elif isinstance(exc, Exception):
            record.status = 500
        self._telemetry.finish(record)


class _HeldStream(Generic[C]):
    """Azure's stream as `_placed` opened it, in the batches it arrived in (never empty), holding its upstream
    slot until the stream is over: released as soon as Azure's stream ends, fails or is cancelled, or when it is
    closed unread. Made once the first batch is in, so that a stream waiting for Azure (a reasoning model's, for
    minutes) is `_placed`'s coroutine alone, with no generator above it. Records the first token and the usage."""

    __slots__ = ("_first", "_pool", "_record", "_rest", "_since", "_upstream")

    def __init__(
        self,
        pool: Pool[AzureClient],
        placed: tuple[Upstream[AzureClient], float, OpenedStream[C]],
        record: RequestRecord,
    ) -> None:
        self._pool = pool
        self._upstream: Upstream[AzureClient] | None = placed[0]
        self._since = placed[1]
        self._first, self._rest = placed[2]
        self._record = record

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> list[C]:
        batch, self._first = self._first, None
        if batch is None:
            try:
                batch = await anext(self._rest)
            except BaseException:  # the end, an error or a cancellation: Azure's stream is over either way
                self._release()
                raise
        record = self._record
        for chunk in batch:
            if record.ttft_s is None and _carries_output(chunk):
                record.first_token()
            if chunk.get("usage"):
                record.tokens(chunk["usage"])
        return batch

    async def aclose(self) -> None:
        try:
            await self._rest.aclose()
        finally:
            self._release()

    def _release(self) -> None:
        if self._upstream is not None:
            self._pool.release(self._upstream, time.monotonic() - self._since)
            self._upstream = None


@serve.deployment(
    # A Serve config sets these from the budget and the longest call (serve_config.py).
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
    graceful_shutdown_timeout_s=DEFAULT_SHUTDOWN_S,
)
@serve.ingress()
class AzureModelServer:
    """One replica: holds its share of the deployment's upstream budget (see budget.py)."""

    def __init__(self, args: dict[str, Any]) -> None:
        self._args: ModelServerArgs = validate_model(ModelServerArgs, args, "args")
        self._model = self._args.openai_model
        self._gate = Gate(self._args.inbound_keys())
        context = serve.get_replica_context()
        self._telemetry = Telemetry(request_log_path(context.app_name, context.replica_id.unique_id))
        self._specs = self._args.pool()
        upstreams: list[Upstream[AzureClient]] = []
        self._budgets: dict[str, tuple[BudgetMember, LeaveFn]] = {}
        for spec in self._specs:
            # Nothing is admitted to an upstream until its budget ledger has granted this replica a share.
            limiter = Limiter(0)
            sync, leave = ray_ledger(context.app_name, context.deployment, spec.name)
            # Known to the ledger by its actor's name, so that it can tell a stopped replica from a silent one.
            # What waits for a slot waits in the pool's one queue, for any upstream: each ledger hears of it all.
            member = BudgetMember(limiter, context.replica_id.to_full_id_str(), sync, queued=lambda: self._pool.waiting)
            self._budgets[spec.name] = (member, leave)
            upstreams.append(Upstream(spec.name, self._client_for(spec, len(self._specs)), limiter))
        self._pool = Pool(upstreams, self._args.retries)
        self._watcher: asyncio.Task[None] | None = None
        self._draining = False
        # A stream's client may take as long to read a chunk as Azure may take to send one, within the call's time.
        self._stall_s = self._args.timeouts.stalled_reader_s
        tune_collector()

    async def reconfigure(self, user_config: dict[str, Any] | None, rank: ReplicaRank) -> None:
        """Serve calls this at start, on every user_config change and when ranks are reassigned."""
        budget: BudgetConfig = validate_model(BudgetConfig, user_config or {}, "user_config")
        budgets = budget.budgets(self._specs)
        self._pool.max_waiting = budget.max_queued_requests
        self._draining = budget.draining
        for name, (member, _) in self._budgets.items():
            member.configure(budgets[name], rank.rank)
            member.start()
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._telemetry.watch(self._pool))
            for upstream in self._pool.upstreams:
                upstream.client.start()

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The replica's ingress, built once it is constructed: its routes are this object's methods."""
        return openai_app(openai_routes(self.responses, self.chat_completions, self.models), _request_id)

    async def check_health(self) -> None:
        """Serve's health probe: never calls Azure (that would spend quota and tie our health to theirs)."""

    async def __del__(self) -> None:
        # Serve calls this once in-flight requests have drained: hand the share back at once.
        if self._watcher is not None:
            self._watcher.cancel()
        self._telemetry.close()
        await asyncio.gather(*(member.leave(leave) for member, leave in self._budgets.values()))
        await asyncio.gather(*(upstream.client.aclose() for upstream in self._pool.upstreams))

    # --- HTTP routes -----------------------------------------------------------------------------

    async def responses(self, request: Request) -> Response:
        self._gate.check(request)
        body = await read_json(request, self._args.max_request_bytes)
        headers: dict[str, str] = {}
        if not wants_stream(body):
            return json_response(await self.create_response(body, headers), headers=headers)
        items = self.create_response_stream(body, headers)
        return stream_answer(items, await anext(items, None), response_sse, stall_s=self._stall_s, headers=headers)

    async def chat_completions(self, request: Request) -> Response:
        self._gate.check(request)
        body = await read_json(request, self._args.max_request_bytes)
        headers: dict[str, str] = {}
        if not wants_stream(body):
            return json_response(await self.create_chat_completion(body, headers), headers=headers)
        items = self._relayed_chat_stream(body, headers)
        return stream_answer(items, await anext(items, None), chat_sse, stall_s=self._stall_s, headers=headers)

    async def models(self, request: Request) -> Response:
        self._gate.check(request)
        return json_response(await self.list_models())

    # --- the same operations, callable through a deployment handle from other Serve apps --------
    # `upstream_headers`, when given, receives Azure's headers worth passing on (quota left, region,
    # request id); the HTTP routes send them with the answer, a handle caller has no use for them.

    async def list_models(self) -> dict[str, Any]:
        """`/v1/models`: the one model that answers, whatever a request's `model` says, however many upstreams
        serve it (named after the top-level deployment)."""
        model = {"id": self._model, "object": "model", "created": 0, "owned_by": "azure"}
        return {"object": "list", "data": [model]}

    async def create_response(self, body: Any, upstream_headers: dict[str, str] | None = None) -> dict[str, Any]:
        async with self._recorded("responses") as record, _in_responses_terms:
            tools, chat_body, settings = self._translate(parse(ResponsesRequest, body), record)
            created_at = int(time.time())
            _, _, completion = await self._placed(record, self._completed, chat_body, upstream_headers, settings)
            record.tokens(completion.get("usage"))
            return to_response(
                completion,
                settings,
                model=self._model,
                response_id=new_id("resp"),
                created_at=created_at,
                completed_at=int(time.time()),
                tools=tools,
            )

    async def create_response_stream(
        self, body: Any, upstream_headers: dict[str, str] | None = None
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Responses stream events, in batches (those made from what Azure sent together; never empty).
        The first is yielded only after Azure has answered, so errors before Azure's first byte are raised
        from the first `anext`, not sent in-band."""
        async with self._recorded("responses", stream=True) as record, _in_responses_terms:
            tools, chat_body, settings = self._translate(parse(ResponsesRequest, body), record)
            created_at = int(time.time())
            placed = await self._placed(
                record, self._stream_opened, chat_body, upstream_headers, read_chunk, settings, hold=True
            )
            async with aclosing(_HeldStream(self._pool, placed, record)) as batches:
                # Made once Azure has answered: a stream waiting for its first chunk (a reasoning model's, for
                # minutes) holds its settings, not the Response it will become.
                machine = ResponseEventStream(
                    settings, model=self._model, response_id=new_id("resp"), created_at=created_at, tools=tools
                )
                yield machine.start()
                try:
                    async for batch in batches:
                        if events := machine.feed_all(batch):
                            yield events
                    events = machine.finish(int(time.time()))
                except OpenAIError as exc:
                    record.error_code = exc.code
                    events = machine.fail(exc)
                record.outcome = events[-1]["type"].removeprefix("response.")
                yield events

    async def create_chat_completion(self, body: Any, upstream_headers: dict[str, str] | None = None) -> dict[str, Any]:
        async with self._recorded("chat/completions") as record:
            req: ChatRequest = parse(ChatRequest, body)
            upstream_body = chat.to_upstream(req, body, self._model)
            _, _, completion = await self._placed(record, self._completed, upstream_body, upstream_headers)
            record.tokens(completion.get("usage"))
            return chat.from_upstream(completion, self._model)

    async def create_chat_completion_stream(
        self, body: Any, upstream_headers: dict[str, str] | None = None
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Chat chunks as the client should see them, in batches (as Azure sent them together; never empty);
        errors before Azure's first byte raise from the first `anext`."""
        async with aclosing(self._chat_stream(body, upstream_headers, jsonwire.loads, chat.stream_chunk)) as batches:
            async for batch in batches:
                yield batch

    def _relayed_chat_stream(self, body: Any, upstream_headers: dict[str, str]) -> AsyncGenerator[list[bytes], None]:
        """The same stream for the HTTP route: each chunk as the JSON to send, most of them Azure's own bytes."""
        return self._chat_stream(body, upstream_headers, chat.read_relayed, chat.relayed)

    async def _chat_stream(
        self,
        body: Any,
        upstream_headers: dict[str, str] | None,
        decode: Callable[[bytes], C],
        shown: Callable[[C, str, bool], S | None],
    ) -> AsyncGenerator[list[S], None]:
        async with self._recorded("chat/completions", stream=True) as record:
            req: ChatRequest = parse(ChatRequest, body)
            include_usage = chat.wants_usage(req)
            upstream_body = chat.to_upstream(req, body, self._model)
            placed = await self._placed(record, self._stream_opened, upstream_body, upstream_headers, decode, hold=True)
            async with aclosing(_HeldStream(self._pool, placed, record)) as batches:
                try:
                    async for batch in batches:
                        forwarded = [
                            chunk for item in batch if (chunk := shown(item, self._model, include_usage)) is not None
                        ]
                        if forwarded:
                            yield forwarded
                except OpenAIError as exc:
                    record.error_code, record.outcome = exc.code, "failed"
                    raise
                record.outcome = "completed"

    # --- internals -------------------------------------------------------------------------------

    def _translate(
        self, req: ResponsesRequest, record: RequestRecord
    ) -> tuple[ToolMap, dict[str, Any], ResponseSettings]:
        """The request's tools (to map Azure's calls back), its Chat Completions body under the config's policy, and
        its settings: the validated request itself is not kept while Azure works."""
        tools = ToolMap.of(req, self._args.ignored_hosted_tools)
        record.tools_left_out = tuple(tools.left_out)
        return tools, to_chat_request(req, tools, self._args.ignored_extra_body_keys), ResponseSettings(req)

    def _client_for(self, spec: UpstreamSpec, pool_size: int) -> AzureClient:
        return AzureClient(
            base_url=spec.openai_base_url,
            deployment=spec.openai_model,
            query=spec.default_query,
            api_key=spec.api_key(),
            # One credential per upstream and replica; its first token is fetched as the replica starts (reconfigure).
            tokens=EntraTokens() if spec.auth == "entra" else None,
            timeouts=self._args.timeouts,
            retries=self._args.retries,
            observer=self._telemetry.upstream(spec.name),
            rejected_parameters=spec.rejected_parameters,
            handed_over=hand_over_rule(pool_size),
        )

    def _completed(
        self,
        client: AzureClient,
        deadline: float,
        body: dict[str, Any],
        upstream_headers: dict[str, str] | None,
        req: ResponseSettings | None = None,
    ) -> Awaitable[dict[str, Any]]:
        """A non-streaming call on `client`, for `_placed`; with `req` (the Responses path), a conversation too
        long is shortened per `truncation`."""
        if req is None:
            return client.complete(body, upstream_headers, deadline=deadline)
        return self._fitting(req, body, lambda body: client.complete(body, upstream_headers, deadline=deadline))

    async def _placed(
        self, record: RequestRecord, call: Callable[..., Awaitable[T]], *args: Any, hold: bool = False
    ) -> tuple[Upstream[AzureClient], float, T]:
        """`call(client, deadline, *args)` in a slot of one upstream: a non-streaming call's answer, or a stream
        opened to its first chunk, with the upstream and when the call began. With `hold` (a stream), the slot is
        still held: the caller hands it to `_HeldStream`, which releases it once the stream is over; without, it
        is released here. While `call` fails for the upstream's own reason, it is made again on another upstream
        (upstreams.py), one at a time, never past the deadline. (Arguments, not closures: a function and a cell
        per variable for each layer were most of a kilobyte of every call in flight.)

        The total timeout counts from here, the wait in the queue included. A full queue, or no slot
        free within the total timeout, is a 429 with a useful Retry-After."""
        if self._draining:
            raise Unavailable(
                "This server is shutting down and accepts no new calls; retry shortly.",
                code="server_shutting_down",
                headers={"retry-after": str(DRAINING_RETRY_AFTER_S)},
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._args.timeouts.total_s
        attempt = 0
        while True:
            attempt += 1
            upstream = await self._slot(deadline, again=attempt > 1)
            record.upstream = upstream.name
            since = time.monotonic()
            try:
                answer = await call(upstream.client, deadline, *args)
            except OpenAIError as error:
                self._pool.release(upstream, None)
                last = attempt == self._args.retries.max_attempts or loop.time() >= deadline
                if last or not self._pool.failed(upstream, error):
                    raise
                self._telemetry.cooldown(upstream.name, error.status)
                continue
            except BaseException:
                self._pool.release(upstream, None)
                raise
            self._pool.succeeded(upstream)
            if not hold:
                self._pool.release(upstream, time.monotonic() - since)
            return upstream, since, answer

    async def _slot(self, deadline: float, again: bool) -> Upstream[AzureClient]:
        try:
            return await self._pool.acquire(deadline, again=again)
        except AllClosed as closed:
            raise closed.error from None
        except (QueueFull, QueueTimeout) as exc:
            total_s = self._args.timeouts.total_s
            wait = max(1, math.ceil(self._pool.estimated_wait_s()))
            why = "the queue is full" if isinstance(exc, QueueFull) else f"none came free within {total_s:g} s"
            raise Overloaded(
                f"All {self._pool.capacity} upstream slots are busy and {why}; retry later.",
                code="server_overloaded",
                headers={"retry-after": str(wait)},
            ) from None

    def _fitting(self, req: ResponsesRequest | ResponseSettings, body: dict[str, Any], call: Any) -> Awaitable[Any]:
        """`call(body)`; with `truncation: auto`, called again without the oldest turns while Azure finds the
        conversation too long: a few times at most, in the caller's upstream slot, within the total timeout."""
        if req.truncation != "auto":
            return cast(Awaitable[Any], call(body))  # no frame of its own for what it would only pass on
        return self._shortened_until_it_fits(body, call)

    async def _shortened_until_it_fits(self, body: dict[str, Any], call: Any) -> Any:
        started = time.monotonic()
        for _ in range(truncation.MAX_RETRIES):
            try:
                return await call(body)
            except UpstreamError as exc:
                if not truncation.is_context_overflow(exc.code, exc.status):
                    raise
                shorter = truncation.drop_oldest_turns(body["messages"], exc.message)
                if shorter is None or time.monotonic() - started > self._args.timeouts.total_s:
                    raise
                body = {**body, "messages": shorter}
        return await call(body)

    def _stream_opened(
        self,
        client: AzureClient,
        deadline: float,
        body: dict[str, Any],
        upstream_headers: dict[str, str] | None,
        decode: Callable[[bytes], C],
        req: ResponseSettings | None = None,
    ) -> Awaitable[OpenedStream[C]]:
        """A stream opened on `client`, for `_placed`: its first batch and the rest (AzureClient.open_stream); with
        `req` (the Responses path), a conversation too long is shortened per `truncation`."""
        if req is None:
            return client.open_stream(body, upstream_headers, decode)
        return self._fitting(req, body, lambda body: client.open_stream(body, upstream_headers, decode))

    def _recorded(self, endpoint: str, stream: bool = False) -> _Recorded:
        return _Recorded(self._telemetry, endpoint, stream)


def build_app(args: dict[str, Any]) -> Application:
    """Serve config entry point: `import_path: serve_app.server:build_app`, `args`: `ModelServerArgs`.

    `num_concurrent_requests` goes in the deployment's `user_config` (see configs/serve_config.yaml).
    Args are validated here, so a bad config fails the deploy with a clear message instead of
    failing every replica.
    """
    validated: ModelServerArgs = validate_model(ModelServerArgs, args, "args")
    for upstream in validated.pool():
        upstream.api_key()  # fail now if a key's environment variable is not set (key auth)
    validated.inbound_keys()
    # mypy does not apply class decorators; at runtime the class is a serve.Deployment.
    return cast(serve.Deployment, AzureModelServer).bind(validated.model_dump(mode="json"))
