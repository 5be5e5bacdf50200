"""Running the simulator on a real socket: in the foreground, or on a background thread for tests."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from .app import create_app
from .config import SimulatorConfig

_Server = TypeVar("_Server", bound="BackgroundServer")


def run(config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted."""
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False)


class BackgroundServer:
    """An ASGI app on a free local port, on a daemon thread, for tests that need real sockets.

    `app` is the live ASGI app (mind that it runs on another thread)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="critical",
                access_log=False,
                lifespan="off",
                # Said, not guessed: uvicorn takes a bound method for an ASGI2 app.
                interface="asgi3",
                # Requests still hanging on purpose must not hold up a test's teardown.
                timeout_graceful_shutdown=1,
            )
        )
        self._thread = threading.Thread(target=self._server.run, name=type(self).__name__, daemon=True)
        self._host = host

    @property
    def port(self) -> int:
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join()

    def __enter__(self: _Server) -> _Server:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


class BackgroundSimulator(BackgroundServer):
    """The simulator as a BackgroundServer:

        with BackgroundSimulator(SimulatorConfig(latency_s=0.1)) as sim:
            client = openai.AsyncOpenAI(base_url=sim.openai_base_url, api_key="sim-key")

    `app.state.simulator` holds its state."""

    app: Starlette

    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(create_app(config), host, port)

    @property
    def openai_base_url(self) -> str:
        """For `openai.OpenAI(base_url=...)`: the v1 route."""
        return f"{self.base_url}/openai/v1"
