"""Microsoft Entra ID tokens for Azure OpenAI, for tenants where key auth is off.

One `EntraTokens` per replica, over one `azure-identity` credential (DefaultAzureCredential by
default: workload identity on AKS, managed identity, environment credentials, the Azure CLI).
Tokens last about an hour. They are fetched off the request path: the first when the replica
starts, each next one in the background once a call sees the current one within
`refresh_margin_s` of expiring; calls go on with the current token meanwhile. A call waits for a
fetch only when there is no usable token at all, and then at most `timeout_s`: a credential
that fails or hangs is a clear 502, never a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from .errors import CredentialUnavailable

SCOPE = "https://cognitiveservices.azure.com/.default"
# A token this close to its expiry is not sent: it could expire on the way.
_MIN_VALIDITY_S = 10.0


class AccessTokenLike(Protocol):
    token: str
    expires_on: int


class AsyncCredential(Protocol):
    """What this module needs of an `azure.identity.aio` credential."""

    async def get_token(self, *scopes: str) -> Any: ...

    async def close(self) -> None: ...


def default_credential() -> AsyncCredential:
    from azure.identity.aio import DefaultAzureCredential

    credential: AsyncCredential = DefaultAzureCredential()
    return credential


class EntraTokens:
    def __init__(
        self,
        credential: AsyncCredential | None = None,
        *,
        scope: str = SCOPE,
        refresh_margin_s: float = 300.0,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential or default_credential()
        self._scope = scope
        self._margin = refresh_margin_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._token: AccessTokenLike | None = None
        self._fetching: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin fetching the first token (call inside the event loop that will use it)."""
        self._fetch()

    async def authorization(self) -> str:
        """`Bearer <token>` for the next call."""
        token = self._token
        left = token.expires_on - self._clock() if token is not None else 0.0
        if left <= self._margin:
            self._fetch()
        if token is not None and left > _MIN_VALIDITY_S:
            return f"Bearer {token.token}"
        fetching = self._fetching
        assert fetching is not None
        try:
            # Shielded: one call giving up must not cancel the fetch other calls wait for.
            await asyncio.wait_for(asyncio.shield(fetching), self._timeout_s)
        except TimeoutError:
            raise CredentialUnavailable(
                f"No Entra ID token for Azure OpenAI within {self._timeout_s:g} s: the credential did not answer.",
                code="upstream_credential_unavailable",
            ) from None
        except Exception as exc:  # azure-identity raises ClientAuthenticationError and its own kinds
            raise CredentialUnavailable(
                f"Could not get an Entra ID token for Azure OpenAI ({type(exc).__name__}: {_first_line(exc)}).",
                code="upstream_credential_unavailable",
            ) from None
        assert self._token is not None
        return f"Bearer {self._token.token}"

    def _fetch(self) -> None:
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.get_running_loop().create_task(self._get())
            self._fetching.add_done_callback(_observed)

    async def _get(self) -> None:
        self._token = await self._credential.get_token(self._scope)

    async def aclose(self) -> None:
        if self._fetching is not None:
            self._fetching.cancel()
        await self._credential.close()


def _observed(task: asyncio.Task[None]) -> None:
    # A failed background refresh is reported by the call that next needs a token, not as an unretrieved error.
    if not task.cancelled():
        task.exception()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
