"""Azure OpenAI's error replies (status, body, headers), worded as the real service words them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from .content_filter import BLOCKED_PROMPT_RESULTS

ACCESS_DENIED_MESSAGE = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
TOKEN_REJECTED_MESSAGE = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), "
    "or have expired."
)
DEPLOYMENT_NOT_FOUND_MESSAGE = (
    "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, "
    "please wait a moment and try again."
)
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"
INVALID_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library "
    "correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble "
    "figuring out how to fix this, please contact us through our help center at help.openai.com.)"
)
PROMPT_FILTERED_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify "
    "your prompt and retry. To learn more about our content filtering policies please read our documentation: "
    "https://go.microsoft.com/fwlink/?linkid=2198766"
)
# The wait an injected 429 asks for when it names none.
DEFAULT_RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class ErrorReply:
    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def _azure(status: int, code: str, message: str) -> ErrorReply:
    return ErrorReply(status, {"error": {"code": code, "message": message}})


def resource_not_found() -> ErrorReply:
    return _azure(404, "404", "Resource not found")


def access_denied() -> ErrorReply:
    return _azure(401, "401", ACCESS_DENIED_MESSAGE)


def token_rejected() -> ErrorReply:
    # An Entra token failure comes from the gateway, without the usual `error` wrapper.
    return ErrorReply(401, {"statusCode": 401, "message": TOKEN_REJECTED_MESSAGE})


def deployment_not_found() -> ErrorReply:
    return _azure(404, "DeploymentNotFound", DEPLOYMENT_NOT_FOUND_MESSAGE)


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ErrorReply:
    return ErrorReply(
        400, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    )


def invalid_json() -> ErrorReply:
    return invalid_request(INVALID_JSON_MESSAGE)


def prompt_filtered() -> ErrorReply:
    return ErrorReply(
        400,
        {
            "error": {
                "message": PROMPT_FILTERED_MESSAGE,
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": BLOCKED_PROMPT_RESULTS,
                },
            }
        },
    )


def retry_headers(retry_after_s: float) -> dict[str, str]:
    return {
        "retry-after": str(max(1, math.ceil(retry_after_s))),
        "retry-after-ms": str(max(1, math.ceil(retry_after_s * 1000))),
    }


def duration(seconds: float) -> str:
    """Azure's spelling of a reset time: `250ms`, `6s`, `1m30s`."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def reset_headers(retry_after_s: float) -> dict[str, str]:
    """What some 429s carry instead of retry-after: when each quota window starts again."""
    return {
        "x-ratelimit-reset-requests": duration(retry_after_s),
        "x-ratelimit-reset-tokens": duration(retry_after_s),
    }


def remaining_headers(requests: int | None, tokens: int | None) -> dict[str, str]:
    """Quota headers; an unlimited quota has none."""
    headers = {}
    if requests is not None:
        headers["x-ratelimit-remaining-requests"] = str(requests)
    if tokens is not None:
        headers["x-ratelimit-remaining-tokens"] = str(tokens)
    return headers


def rate_limited(
    api_version: str | None,
    retry_after_s: float,
    *,
    exceeded: Literal["token", "call"],
    remaining_requests: int | None = 0,
    remaining_tokens: int | None = 0,
    retry_after_headers: bool = True,
) -> ErrorReply:
    message = (
        f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {api_version or 'v1'} "
        f"have exceeded {exceeded} rate limit of your current AIServices S0 pricing tier. Please retry after "
        f"{max(1, math.ceil(retry_after_s))} seconds. Please contact Azure support service if you would like to "
        "further increase the default rate limit."
    )
    when = retry_headers(retry_after_s) if retry_after_headers else reset_headers(retry_after_s)
    headers = {**when, **remaining_headers(remaining_requests, remaining_tokens)}
    return ErrorReply(429, {"error": {"code": "429", "message": message}}, headers)


_SERVER_ERROR_STATUSES = frozenset({500, 502, 503, 504})
_AZURE_ERRORS: dict[int, tuple[str, str]] = {
    403: ("403", "Access denied due to Virtual Network/Firewall rules."),
    408: ("Timeout", "The operation was timeout."),
    409: ("Conflict", "The request could not be completed due to a conflict with the current state of the resource."),
}


def status_reply(
    status: int, api_version: str | None, retry_after_s: float | None = None, retry_after_headers: bool = True
) -> ErrorReply:
    """What Azure sends for `status`, for injected faults; a 429 always says when to retry."""
    if status == 429:
        wait = retry_after_s or DEFAULT_RETRY_AFTER_S
        return rate_limited(api_version, wait, exceeded="call", retry_after_headers=retry_after_headers)
    if status == 400:
        reply = invalid_request("The request was rejected by the simulator as instructed.")
    elif status == 401:
        reply = access_denied()
    elif status == 404:
        reply = resource_not_found()
    elif status in _SERVER_ERROR_STATUSES:
        reply = _azure(status, "InternalServerError", SERVER_ERROR_MESSAGE)
    else:
        code, message = _AZURE_ERRORS.get(status, (str(status), _phrase(status)))
        reply = _azure(status, code, message)
    if retry_after_s is None:
        return reply
    return ErrorReply(reply.status, reply.body, retry_headers(retry_after_s))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def stream_error_event() -> dict[str, Any]:
    """The in-band error a broken stream carries; clients raise on any `data:` object with `error`."""
    return {"error": {"message": SERVER_ERROR_MESSAGE, "type": "server_error", "param": None, "code": "server_error"}}
