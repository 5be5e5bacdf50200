"""Typed errors, each carrying the HTTP status and the OpenAI error envelope it becomes.

Every failure a client can see is one of these. `http.error_response` is the single place where
they turn into HTTP; a caller through a deployment handle gets the exception itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# The OpenAI `type` for a status when the upstream body does not carry one.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    return _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")


class OpenAIError(Exception):
    """An error a client receives as `{"error": {"message", "type", "param", "code"}}`."""

    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status is not None:
            self.status = status
        self.type = type or error_type_for(self.status)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep status, code and headers when Ray carries the error to a handle caller in another process.
        return _rebuild, (type(self), self.__dict__)


def _rebuild(cls: type[OpenAIError], state: dict[str, Any]) -> OpenAIError:
    error = cls.__new__(cls)
    Exception.__init__(error, state["message"])
    error.__dict__.update(state)
    return error


class InvalidRequest(OpenAIError):
    """The client's request is malformed or asks for something we cannot do."""

    status = 400


class UnsupportedField(InvalidRequest):
    """A request field that exists in the OpenAI API but that this server cannot honour.

    It is refused rather than dropped: a caller relying on it would otherwise get a silently
    different answer.
    """

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(
            f"'{param}' is not supported by this server: {reason}", param=param, code="unsupported_parameter"
        )


class RefusedParameter(InvalidRequest):
    """A request parameter the upstream deployment refuses, set to something other than its default.

    `field` is the name the client used; the Responses endpoint renames Chat Completions parameters
    (`reasoning_effort` is `reasoning.effort` there) with `named`."""

    def __init__(self, field: str, value: Any, deployment: str, *, source: str, default: Any = None) -> None:
        self.field, self.value, self.deployment, self.source, self.default = field, value, deployment, source, default
        if default is None:
            remedy = "leave it out"
        else:
            remedy = f"leave it out, or send its default ({_json(default)}), which is then left out for you"
        super().__init__(
            f"'{field}' cannot be honoured: the Azure deployment '{deployment}' does not support it ({source}); "
            f"this request sets it to {_json(value)}. To use this deployment, {remedy}.",
            param=field,
            code="unsupported_parameter",
        )

    def named(self, field: str) -> RefusedParameter:
        return RefusedParameter(field, self.value, self.deployment, source=self.source, default=self.default)


def _json(value: Any) -> str:
    return json.dumps(value)


class RequestTooLarge(OpenAIError):
    status = 413


class Unauthorized(OpenAIError):
    """Inbound auth failed: the caller did not present an accepted key."""

    status = 401


class Overloaded(OpenAIError):
    """This server's own queue is full; the client should retry later."""

    status = 429


class Unavailable(OpenAIError):
    """This server is stopping; the client should retry (elsewhere, or once it is back)."""

    status = 503


class ReplicaUnavailable(OpenAIError):
    """The model server replica a request went to died before answering, and so did those tried after it."""

    status = 502


class UpstreamError(OpenAIError):
    """Azure answered with an error status; status, code and message are kept as Azure sent them."""


class UpstreamUnavailable(OpenAIError):
    """Azure could not be reached, or the connection broke before a complete answer."""

    status = 502


class CredentialUnavailable(OpenAIError):
    """No Entra ID token could be had for the call to Azure (the credential failed, or did not answer in time)."""

    status = 502


class UpstreamTimeout(OpenAIError):
    """Azure did not answer within the configured timeouts."""

    status = 504
