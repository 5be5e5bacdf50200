"""The Chat Completions endpoint, in Azure's classic and v1 URL forms.

Order of checks, as Azure's gateway and service apply them: route and api-version (404), key (401),
then the request counts as accepted (in flight): injected fault, body, deployment (404), a fault injected
for streams only, validation (400), quota (429), latency, trigger phrases, answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from functools import lru_cache
from typing import Any

from starlette.datastructures import Headers as RequestHeaders
from starlette.datastructures import QueryParams
from starlette.types import Receive, Scope, Send

from . import errors
from .answers import Answer, generate, last_user_text, prompt_tokens
from .config import DeploymentSpec, SimulatorConfig
from .entra import token_is_valid
from .errors import ErrorReply
from .exchange import ClientGone, Exchange, Headers
from .faults import Fault
from .payloads import Interruption, ResponseMeta, completion_body, stream_plan
from .ratelimit import Admission, charged_tokens
from .state import SimulatorState
from .triggers import Triggers, UnknownTrigger, parse_triggers
from .validation import InvalidRequest, check_context_length, validate_chat_request

_JSON = b"application/json"
_EVENT_STREAM = b"text/event-stream; charset=utf-8"
# At most this many frames in one write (about 8 KiB of text deltas): a long answer still arrives in pieces.
_FRAMES_PER_WRITE = 32


class ChatCompletionsEndpoint:
    """An ASGI endpoint; `classic` routes carry the deployment in the path and need a known api-version."""

    def __init__(self, state: SimulatorState, *, classic: bool) -> None:
        self._state = state
        self._classic = classic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self._state.stats
        stats.requests_total += 1
        call = _Call(Exchange(receive, send), self._state.config)
        try:
            await self._admit(call, scope)
        finally:
            call.exchange.close()
            stats.by_status[call.exchange.status or 499] += 1

    async def _admit(self, call: _Call, scope: Scope) -> None:
        api_version = None
        if self._classic:
            api_version = QueryParams(scope["query_string"]).get("api-version")
            if api_version not in call.config.api_version_set:
                return await call.fail(errors.resource_not_found())
        denial = _authorize(RequestHeaders(scope=scope), call.config)
        if denial is not None:
            return await call.fail(denial)
        stats = self._state.stats
        stats.accept()
        try:
            deployment = scope["path_params"]["deployment"] if self._classic else None
            await self._serve(call, api_version, deployment)
        except ClientGone:
            self._count_departure(call)
        except asyncio.CancelledError:
            # Ray Serve cancels a request whose client disconnected, possibly before http.disconnect arrives.
            self._count_departure(call)
            raise
        finally:
            stats.finish()

    def _count_departure(self, call: _Call) -> None:
        if call.streaming:
            self._state.stats.streams_closed_by_client += 1
        else:
            self._state.stats.requests_closed_by_client += 1

    async def _serve(self, call: _Call, api_version: str | None, deployment: str | None) -> None:
        state, config = self._state, call.config
        fault = state.faults.take()
        if fault is not None:
            return await self._inject(call, fault, api_version)
        try:
            body = json.loads(await call.exchange.read_body())
        except ValueError:
            return await call.fail(errors.invalid_json())
        if not isinstance(body, dict):
            return await call.fail(errors.invalid_json())
        if deployment is None:
            deployment = body.get("model")
            if not isinstance(deployment, str):
                missing_model = "Missing required parameter: 'model'."
                return await call.fail(errors.invalid_request(missing_model, "model", "missing_required_parameter"))
        spec = config.deployments.get(deployment)
        if spec is None:
            return await call.fail(errors.deployment_not_found())
        fault = state.faults.take(stream=bool(body.get("stream")))
        if fault is not None:  # one for streams only: whether the request streams is known only now
            return await self._inject(call, fault, api_version)
        state.stats.by_deployment[deployment] += 1
        state.recent_requests.append({"deployment": deployment, "api_version": api_version, "body": body})
        try:
            validate_chat_request(body, rules=spec.rules, api_version=api_version)
            check_context_length(body, prompt_tokens(body), spec.context_tokens)
            triggers = parse_triggers(last_user_text(body["messages"]))
        except InvalidRequest as problem:
            return await call.fail(errors.invalid_request(problem.message, problem.param, problem.code))
        except UnknownTrigger as problem:
            return await call.fail(errors.invalid_request(str(problem)))
        if state.limiter.enabled:
            charge = charged_tokens(body, prompt_tokens(body), config.rate_limit_default_max_tokens)
            admission = state.limiter.admit(deployment, charge)
            if not admission.allowed:
                state.stats.rate_limited += 1
                return await call.fail(_quota_exceeded(admission, api_version, config.retry_after_headers))
            call.admission = admission
        await self._answer(call, body, spec, triggers, api_version)

    async def _inject(self, call: _Call, fault: Fault, api_version: str | None) -> None:
        self._state.stats.faults_injected += 1
        config = call.config
        await call.fail(errors.status_reply(fault.status, api_version, fault.retry_after_s, config.retry_after_headers))

    async def _answer(
        self, call: _Call, body: dict[str, Any], spec: DeploymentSpec, triggers: Triggers, api_version: str | None
    ) -> None:
        stream = bool(body.get("stream"))
        delay = triggers.sleep_s + (call.config.ttft_s if stream else call.config.latency_s)
        if delay > 0:
            await call.exchange.pause(delay)
        if triggers.hang:
            await call.exchange.pause(None)
        if triggers.content_filter_prompt:
            return await call.fail(errors.prompt_filtered())
        if triggers.status is not None and self._state.status_tally.should_fail(triggers.status, body["messages"]):
            reply = errors.status_reply(triggers.status.status, api_version, None, call.config.retry_after_headers)
            return await call.fail(reply)
        answer = generate(body, reasoning=spec.reasoning, triggers=triggers)
        stats = self._state.stats
        stats.prompt_tokens += answer.usage.prompt_tokens
        stats.completion_tokens += answer.usage.completion_tokens
        meta = ResponseMeta(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=spec.model,
            system_fingerprint=_fingerprint(spec.model),
            service_tier=_tier_used(body.get("service_tier")),
        )
        top_logprobs = (body.get("top_logprobs") or 0) if body.get("logprobs") else None
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            interruption = _interruption(triggers)
            await self._stream(call, answer, meta, include_usage, top_logprobs, interruption, spec.async_filter)
            return
        payload = json.dumps(completion_body(answer, meta, top_logprobs=top_logprobs)).encode()
        headers = call.headers(_JSON, length=len(payload))
        if triggers.reset_mid_body:
            await call.exchange.start(200, headers)
            await call.exchange.write(payload[: len(payload) // 2], more=True)
            stats.responses_aborted += 1
            return
        await call.exchange.respond(200, payload, headers)

    async def _stream(
        self,
        call: _Call,
        answer: Answer,
        meta: ResponseMeta,
        include_usage: bool,
        top_logprobs: int | None,
        interruption: Interruption | None,
        async_filter: bool,
    ) -> None:
        plan = stream_plan(
            answer,
            meta,
            include_usage=include_usage,
            top_logprobs=top_logprobs,
            interruption=interruption,
            async_filter=async_filter,
        )
        exchange, stats, pace = call.exchange, self._state.stats, call.config.inter_token_s
        exchange.watch()
        await exchange.start(200, call.headers(_EVENT_STREAM))
        call.streaming = True
        stats.streams_started += 1
        tokens_sent = False
        # The frames ready together go out in one write, as a server whose tokens come faster than its
        # writes sends them: unpaced, a write per frame made the simulator the slowest part of every
        # streaming benchmark of ours (one core at about 75,000 frames/s).
        ready: list[bytes] = []
        for frame in plan.frames:
            if frame.paced:
                if tokens_sent and pace > 0:
                    await self._write(exchange, ready)
                    await exchange.pause(pace)
                tokens_sent = True
            ready.append(frame.data)
            if len(ready) >= _FRAMES_PER_WRITE:
                await self._write(exchange, ready)
        await self._write(exchange, ready)
        if plan.abrupt:
            stats.streams_aborted += 1
            return
        exchange.ensure_connected()
        await exchange.write(b"", more=False)
        if interruption == "error":
            stats.streams_aborted += 1
        else:
            stats.streams_completed += 1

    @staticmethod
    async def _write(exchange: Exchange, frames: list[bytes]) -> None:
        if frames:
            data = b"".join(frames)
            frames.clear()
            await exchange.write(data, more=True)


class _Call:
    """One request's response-side context."""

    __slots__ = ("admission", "config", "exchange", "request_id", "streaming")

    def __init__(self, exchange: Exchange, config: SimulatorConfig) -> None:
        self.exchange = exchange
        self.config = config
        self.request_id = str(uuid.uuid4()).encode()
        self.admission: Admission | None = None
        self.streaming = False

    def headers(self, content_type: bytes, length: int | None = None) -> Headers:
        """Azure's response headers, with the quota left once this request was admitted under one."""
        headers = [
            (b"content-type", content_type),
            (b"apim-request-id", self.request_id),
            (b"x-request-id", self.request_id),
            (b"x-ms-region", self.config.region.encode()),
        ]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        if self.admission is not None:
            quota = errors.remaining_headers(self.admission.remaining_requests, self.admission.remaining_tokens)
            headers.extend((name.encode(), value.encode()) for name, value in quota.items())
        return headers

    async def fail(self, reply: ErrorReply) -> None:
        payload = json.dumps(reply.body).encode()
        headers = self.headers(_JSON, length=len(payload))
        headers.extend((name.encode(), value.encode()) for name, value in reply.headers.items())
        await self.exchange.respond(reply.status, payload, headers)


def _authorize(headers: RequestHeaders, config: SimulatorConfig) -> ErrorReply | None:
    key = headers.get("api-key")
    if key is not None:
        return None if key in config.api_keys else errors.access_denied()
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return errors.access_denied()
    if token in config.api_keys:
        return None
    if token.count(".") != 2:
        return errors.access_denied()
    # A JWT-shaped bearer is an Entra token, which the gateway checks, and rejects with its own body.
    signing_key = config.entra_signing_key
    return None if signing_key is not None and token_is_valid(token, signing_key) else errors.token_rejected()


def _quota_exceeded(admission: Admission, api_version: str | None, retry_after_headers: bool) -> ErrorReply:
    assert admission.exceeded is not None
    return errors.rate_limited(
        api_version,
        admission.retry_after_s,
        exceeded=admission.exceeded,
        remaining_requests=admission.remaining_requests,
        remaining_tokens=admission.remaining_tokens,
        retry_after_headers=retry_after_headers,
    )


def _tier_used(asked: Any) -> str:
    # `auto` runs on the standard tier unless the resource has priority processing set to be used by default.
    return "default" if asked in (None, "auto") else str(asked)


def _interruption(triggers: Triggers) -> Interruption | None:
    if triggers.reset_mid_body:
        return "reset"
    if triggers.drop_mid_stream:
        return "drop"
    if triggers.error_mid_stream:
        return "error"
    return None


@lru_cache(maxsize=64)
def _fingerprint(model: str) -> str:
    return "fp_" + hashlib.blake2b(model.encode(), digest_size=5).hexdigest()
