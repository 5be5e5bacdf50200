"""The HAProxy ingress settings, as Serve turns them into HAProxy's config: HAProxy accepts the config,
and what we add comes after what it overrides. (That it works is shown under load in
tests/test_e2e_faults.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serve_app.cluster import ingress_env

# Serve reads its HAProxy settings from the environment when imported, so the config is rendered in a
# process of its own, from Serve's own template and classes.
_RENDER = """
import asyncio, sys
from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
folder = sys.argv[1]
api = HAProxyApi(
    cfg=HAProxyConfig(socket_path=folder + "/admin.sock", server_state_base=folder,
                      server_state_file=folder + "/state", metrics_socket_path=folder + "/metrics.sock"),
    backend_configs={"http-app": BackendConfig(name="http-app", path_prefix="/app", app_name="app",
                                               servers=[ServerConfig("replica-1", "127.0.0.1", 30001)])},
    config_file_path=folder + "/haproxy.cfg",
)
api._generate_config_file_internal()
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("haproxy")
    env = {**os.environ, **ingress_env("haproxy")}
    subprocess.run([sys.executable, "-c", _RENDER, str(folder)], env=env, check=True)
    return folder / "haproxy.cfg"


def test_haproxy_accepts_the_config_serve_generates_with_our_settings(rendered: Path) -> None:
    from ray.serve._private.haproxy import get_haproxy_binary

    check = subprocess.run([get_haproxy_binary(), "-c", "-f", str(rendered)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_requests_are_buffered_for_retries_and_errors_answer_in_the_envelope_after_serves_defaults(
    rendered: Path,
) -> None:
    defaults = rendered.read_text().split("\ndefaults\n", 1)[1].split("\nfrontend ", 1)[0].splitlines()
    lines = [line.strip() for line in defaults]
    assert "retry-on conn-failure empty-response" in lines
    assert lines.index("no option splice-request") > lines.index("option splice-request")
    assert "option http-buffer-request" in lines
    errors = [line for line in lines if line.startswith("http-error status ")]
    assert [line.split()[2] for line in errors] == ["502", "503", "504"]
    last_errorfile = max(i for i, line in enumerate(lines) if line.startswith("errorfile "))
    assert all(lines.index(line) > last_errorfile for line in errors)
    for line in errors:
        body = json.loads(line.split(" string '", 1)[1].split("' hdr ", 1)[0])
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert line.split(" hdr ", 1)[1].startswith("retry-after ")
