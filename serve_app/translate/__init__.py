"""Translation between the OpenAI Responses API and Azure Chat Completions: pure functions over data."""

from .request import to_chat_request
from .response import response_envelope, to_response

__all__ = ["response_envelope", "to_chat_request", "to_response"]
