"""The Azure key never leaks: a whole `python -m serve_app serve` run with failures of every kind, and
nothing it printed, logged (Ray's logs, Serve's, HAProxy's) or answered contains the key."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.cli import ROOT, SERVE, serving
from support.ports import free_port, isolated_ray_env

from serve_app.config import DEFAULT_CONFIG, AzureModelConfig
from serve_app.serve_config import model_server_app
from serve_app.simulator import CONTENT_FILTER_PROMPT, BackgroundSimulator, SimulatorConfig, status_trigger

pytestmark = pytest.mark.serve


def env_yaml(path: Path, base_url: str, key: str, api_version: str | None = "2024-10-21") -> Path:
    lines = [f"policy_base_url: {base_url}", f"policy_api_key: {key}", "policy_model_name: gpt-4o"]
    if api_version:
        lines += [
            "policy_model:",
            "  responses_api_models:",
            "    azure_openai_model:",
            "      default_query:",
            f"        api-version: '{api_version}'",
            "      num_concurrent_requests: 2",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def files_containing(root: str, needle: bytes) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            with open(path, "rb") as f:
                if needle in f.read():
                    found.append(path)
    return found


@pytest.fixture
def scratch() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="sk", dir="/tmp")  # short: Ray's unix sockets live under it
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_key_appears_in_no_output_log_answer_or_generated_config(tmp_path: Path, scratch: str) -> None:
    key = f"sk-SECRET-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "RAY_TMPDIR": scratch,
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{scratch}/hap/admin.sock",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{scratch}/hap/haproxy.cfg",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{scratch}/hap/metrics.sock",
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        **isolated_ray_env(),
    }
    port = free_port()
    outputs: list[str] = []
    with BackgroundSimulator(SimulatorConfig(api_keys=(key,))) as sim:
        # A config that fails to load names its problems, not the key.
        broken = subprocess.run(
            [
                *SERVE,
                "--config",
                str(DEFAULT_CONFIG),
                "--env-file",
                str(env_yaml(tmp_path / "broken.yaml", sim.base_url, key, api_version=None)),
                "--port",
                str(port),
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert broken.returncode == 2 and "api-version" in broken.stderr
        outputs += [broken.stdout, broken.stderr]

        log = tmp_path / "serve.log"
        env_file = env_yaml(tmp_path / "env.yaml", sim.base_url, key)
        with serving(["--config", str(DEFAULT_CONFIG), "--env-file", str(env_file), "--port", str(port)], log, env):
            url = f"http://127.0.0.1:{port}/policy_model/v1"
            with httpx.Client(timeout=60) as client:
                answers = [
                    client.post(f"{url}/responses", json={"input": "hello"}),
                    client.post(f"{url}/responses", json={"input": "hello", "stream": True}),
                    client.post(f"{url}/responses", content=b"{not json"),
                    client.post(f"{url}/responses", json={"input": "hello", "background": True}),
                    client.post(f"{url}/responses", json={"input": f"x {CONTENT_FILTER_PROMPT}"}),
                    client.post(f"{url}/responses", json={"input": f"x {status_trigger(401)}"}),
                    client.post(
                        f"{url}/chat/completions",
                        json={"messages": [{"role": "user", "content": f"x {status_trigger(404)}"}]},
                    ),
                    client.get(f"{url}/models"),
                    client.get(f"http://127.0.0.1:{port}/-/healthz"),
                    client.get(f"http://127.0.0.1:{port}/-/routes"),
                ]
            assert [a.status_code for a in answers] == [200, 200, 400, 400, 400, 401, 404, 200, 200, 200]
            outputs += [a.text + str(a.headers) for a in answers]
    outputs.append(log.read_text())

    assert not [text[:200] for text in outputs if key in text]
    assert files_containing(scratch, key.encode()) == []
    # The search does read the run's logs: Ray logged the app's args, which name the key's variable.
    assert files_containing(scratch, b"POLICY_MODEL_API_KEY")
    assert files_containing(os.path.join(scratch, "hap"), b"policy_model")
    config = AzureModelConfig(
        openai_base_url="https://x.openai.azure.com",
        openai_api_key=key,
        openai_model="m",
        default_query={"api-version": "2024-10-21"},
        num_concurrent_requests=1,
    )
    assert key not in repr(config) and key not in str(model_server_app("policy_model", config))
