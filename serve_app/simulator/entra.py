"""Entra ID access tokens as the simulator issues and checks them.

Real tokens are JWTs signed by Entra ID; the simulator's are JWT-shaped too (header.payload.signature,
base64url), signed with HMAC-SHA256 under a key the simulator is configured with, so that a test's token
endpoint can hand out tokens the simulator accepts, and expired or foreign ones are refused as Azure refuses
them. The audience is Azure OpenAI's, as for scope `https://cognitiveservices.azure.com/.default`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

AUDIENCE = "https://cognitiveservices.azure.com"


def issue_token(signing_key: str, expires_on: float, audience: str = AUDIENCE) -> str:
    header = _encode({"alg": "HS256", "typ": "JWT"})
    payload = _encode({"aud": audience, "exp": int(expires_on)})
    return f"{header}.{payload}.{_signature(signing_key, f'{header}.{payload}')}"


def token_is_valid(token: str, signing_key: str, now: float | None = None) -> bool:
    """Signed with `signing_key`, for Azure OpenAI, and not expired."""
    try:
        header, payload, signature = token.split(".")
        claims: Any = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return False
    if not hmac.compare_digest(signature, _signature(signing_key, f"{header}.{payload}")):
        return False
    if not isinstance(claims, dict) or claims.get("aud") != AUDIENCE:
        return False
    expires_on = claims.get("exp")
    return isinstance(expires_on, int) and expires_on > (time.time() if now is None else now)


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _signature(signing_key: str, signed: str) -> str:
    digest = hmac.new(signing_key.encode(), signed.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
