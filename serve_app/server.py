"""The Ray Serve deployment: wires translator and Azure client, and owns concurrency.

Data flows one way: request -> translate -> upstream (under the limiter) -> translate back ->
response. Every error is an `OpenAIError`, turned into HTTP by the one handler below.

Streams hold their upstream slot for as long as they run. They are opened before the HTTP
answer is committed: Azure's status and first frame are awaited first, so an error before the
first byte is a normal HTTP error, and only later errors travel in-band.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at runtime.
import json
import logging
import time
from contextlib import aclosing
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from ray import serve
from ray.serve import Application
from ray.serve.schema import ReplicaRank
from starlette.types import Receive, Scope, Send

from .azure import AzureClient, dumps
from .budget import BudgetMember, ray_ledger
from .config import BudgetConfig, ModelServerArgs, validate_model
from .errors import InvalidRequest, OpenAIError
from .limiter import Limiter
from .schemas import ChatRequest, ResponsesRequest, parse
from .translate import chat, to_chat_request, to_response
from .translate.response import new_id
from .translate.stream import ResponseEventStream

logger = logging.getLogger("ray.serve")

api = FastAPI(title="Azure OpenAI model server", docs_url=None, redoc_url=None)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=dumps(data), status_code=status, headers=headers, media_type="application/json")


@api.exception_handler(OpenAIError)
async def _openai_error(request: Request, exc: OpenAIError) -> Response:
    return json_response(exc.body(), exc.status, exc.headers)


@api.exception_handler(RequestValidationError)
async def _invalid_route_arguments(request: Request, exc: RequestValidationError) -> Response:
    # Routes read their bodies themselves; this only fires on a malformed query or path.
    error = InvalidRequest("The request does not match this endpoint.")
    return json_response(error.body(), error.status)


async def read_json(request: Request) -> Any:
    body = await request.body()
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest("The request body is not valid JSON.", code="invalid_json") from None


class EventStreamResponse(StreamingResponse):
    """A server-sent-event response that always closes its source, even when the client leaves
    while the source waits at a `yield` (Starlette would leave it suspended until GC)."""

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()  # type: ignore[attr-defined]


def response_sse(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async def frames() -> AsyncIterator[bytes]:
        async with aclosing(events):
            async for event in events:
                yield b"event: " + event["type"].encode() + b"\ndata: " + dumps(event) + b"\n\n"

    return frames()


def chat_sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async def frames() -> AsyncIterator[bytes]:
        async with aclosing(chunks):
            try:
                async for chunk in chunks:
                    yield b"data: " + dumps(chunk) + b"\n\n"
            except OpenAIError as exc:
                yield b"data: " + dumps(exc.body()) + b"\n\n"
            yield b"data: [DONE]\n\n"

    return frames()


async def prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async with aclosing(rest):
        yield first
        async for item in rest:
            yield item


@serve.deployment(
    # A Serve config sets these from the budget and the longest call (serve_config.py).
    max_ongoing_requests=8,
    graceful_shutdown_timeout_s=1260,
)
@serve.ingress(api)
class AzureModelServer:
    """One replica: holds its share of the deployment's upstream budget (see budget.py)."""

    def __init__(self, args: dict[str, Any]) -> None:
        self._args: ModelServerArgs = validate_model(ModelServerArgs, args, "args")
        self._model = self._args.openai_model
        self._client = AzureClient(
            base_url=self._args.openai_base_url,
            deployment=self._model,
            query=self._args.default_query,
            api_key=self._args.api_key(),
            timeouts=self._args.timeouts,
            retries=self._args.retries,
        )
        # Nothing is admitted upstream until the budget ledger has granted this replica a share.
        self._limiter = Limiter(0)
        context = serve.get_replica_context()
        sync, self._ledger_leave = ray_ledger(context.app_name, context.deployment)
        self._budget = BudgetMember(self._limiter, context.replica_id.unique_id, sync)

    async def reconfigure(self, user_config: dict[str, Any] | None, rank: ReplicaRank) -> None:
        """Serve calls this at start, on every user_config change and when ranks are reassigned."""
        budget: BudgetConfig = validate_model(BudgetConfig, user_config or {}, "user_config")
        self._budget.configure(budget.num_concurrent_requests, rank.rank)

    async def __del__(self) -> None:
        # Serve calls this once in-flight requests have drained: hand the share back at once.
        await self._budget.leave(self._ledger_leave)
        await self._client.aclose()

    async def check_health(self) -> None:
        """Serve's health probe: never calls Azure (that would spend quota and tie our health to theirs)."""

    # --- HTTP routes -----------------------------------------------------------------------------

    @api.post("/v1/responses")
    async def responses(self, request: Request) -> Response:
        body = await read_json(request)
        if isinstance(body, dict) and body.get("stream"):
            events = self.create_response_stream(body)
            first = await anext(events)  # raises, as a plain HTTP error, until Azure has answered
            return EventStreamResponse(response_sse(prepend(first, events)))
        return json_response(await self.create_response(body))

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        body = await read_json(request)
        if isinstance(body, dict) and body.get("stream"):
            req, upstream_body = self._chat_request(body)
            chunks = self._upstream_stream(upstream_body)
            first = await anext(chunks, None)
            return EventStreamResponse(chat_sse(self._chat_chunks(req, first, chunks)))
        return json_response(await self.create_chat_completion(body))

    @api.get("/v1/models")
    async def models(self) -> Response:
        model = {"id": self._model, "object": "model", "created": 0, "owned_by": "azure"}
        return json_response({"object": "list", "data": [model]})

    # --- the same operations, callable through a deployment handle from other Serve apps --------

    async def create_response(self, body: Any) -> dict[str, Any]:
        req: ResponsesRequest = parse(ResponsesRequest, body)
        chat_body = to_chat_request(req)
        created_at = int(time.time())
        async with self._limiter:
            completion = await self._client.complete(chat_body)
        return to_response(
            completion, req, model=self._model, response_id=new_id("resp"), created_at=created_at,
            completed_at=int(time.time()),
        )

    async def create_response_stream(self, body: Any) -> AsyncIterator[dict[str, Any]]:
        """Responses stream events. The first event is yielded only after Azure has answered, so
        errors before Azure's first byte are raised from the first `anext`, not sent in-band."""
        req: ResponsesRequest = parse(ResponsesRequest, body)
        chat_body = to_chat_request(req)
        machine = ResponseEventStream(req, model=self._model, response_id=new_id("resp"), created_at=int(time.time()))
        async with aclosing(self._upstream_stream(chat_body)) as chunks:
            first = await anext(chunks, None)
            for event in machine.start():
                yield event
            try:
                if first is not None:
                    for event in machine.feed(first):
                        yield event
                async for chunk in chunks:
                    for event in machine.feed(chunk):
                        yield event
            except OpenAIError as exc:
                for event in machine.fail(exc):
                    yield event
                return
            for event in machine.finish(int(time.time())):
                yield event

    async def create_chat_completion(self, body: Any) -> dict[str, Any]:
        _, upstream_body = self._chat_request(body)
        async with self._limiter:
            completion = await self._client.complete(upstream_body)
        return chat.from_upstream(completion, self._model)

    # --- internals -------------------------------------------------------------------------------

    def _chat_request(self, body: Any) -> tuple[ChatRequest, dict[str, Any]]:
        req: ChatRequest = parse(ChatRequest, body)
        return req, chat.to_upstream(req, body, self._model)

    async def _upstream_stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Azure's chunks, holding one upstream slot from before the call until the stream is closed."""
        async with self._limiter, aclosing(self._client.stream(body)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _chat_chunks(
        self, req: ChatRequest, first: dict[str, Any] | None, chunks: AsyncIterator[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        include_usage = chat.wants_usage(req)
        async with aclosing(chunks):
            if first is not None:
                forwarded = chat.stream_chunk(first, self._model, include_usage)
                if forwarded is not None:
                    yield forwarded
            async for chunk in chunks:
                forwarded = chat.stream_chunk(chunk, self._model, include_usage)
                if forwarded is not None:
                    yield forwarded


def build_app(args: dict[str, Any]) -> Application:
    """Serve config entry point: `import_path: serve_app.server:build_app`, `args`: `ModelServerArgs`.

    `num_concurrent_requests` goes in the deployment's `user_config` (see configs/serve_config.yaml).
    Args are validated here, so a bad config fails the deploy with a clear message instead of
    failing every replica.
    """
    validated: ModelServerArgs = validate_model(ModelServerArgs, args, "args")
    validated.api_key()  # fail now if the key's environment variable is not set
    return AzureModelServer.bind(validated.model_dump(mode="json"))
