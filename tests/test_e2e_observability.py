"""Observability: one structured log line per request carrying the request id the client got, and the
Serve metrics the README promises, exported by Ray."""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

import httpx
import pytest
import ray
from support.serve import Serve, sim_app
from support.sim_admin import SimAdmin
from support.waiting import wait_until

from serve_app.simulator import BackgroundSimulator

pytestmark = pytest.mark.serve

SECRET_TEXT = "a-private-prompt-7d1f"


@pytest.fixture(scope="module")
def apps(serve_instance: Serve, simulator: BackgroundSimulator) -> Serve:
    serve_instance.deploy(sim_app("observed", simulator, ignored_hosted_tools=("web_search",)))
    return serve_instance


def log_lines(app: str) -> list[dict[str, Any]]:
    session = ray._private.worker._global_node.get_session_dir_path()
    lines = []
    for path in glob.glob(os.path.join(session, "logs", "serve", f"requests_{app}_*.log")):
        with open(path) as log:
            lines += [json.loads(line) for line in log]
    return lines


def test_each_request_logs_one_line_with_the_request_id_it_returned_and_no_body(
    apps: Serve, sim_admin: SimAdmin
) -> None:
    url = apps.base_url("observed")
    plain = httpx.post(f"{url}/responses", json={"input": SECRET_TEXT}, timeout=30)
    failed = httpx.post(f"{url}/responses", json={"input": SECRET_TEXT, "background": True}, timeout=30)
    with httpx.stream(
        "POST",
        f"{url}/chat/completions",
        timeout=30,
        json={
            "messages": [{"role": "user", "content": SECRET_TEXT}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as streamed:
        streamed.read()
    ids = {r.headers["x-request-id"]: r for r in (plain, failed, streamed)}
    wait_until(
        lambda: ids.keys() <= {line["request_id"] for line in log_lines("observed")},
        "the log lines",
        timeout_s=20,
        poll_s=0.2,
    )
    by_id = {line["request_id"]: line for line in log_lines("observed") if line["request_id"] in ids}
    assert len(by_id) == 3
    assert by_id[plain.headers["x-request-id"]] | {"duration_ms": 0, "time": 0} == {
        "time": 0,
        "request_id": plain.headers["x-request-id"],
        "endpoint": "responses",
        "upstream": "primary",
        "stream": False,
        "status": 200,
        "outcome": None,
        "error_code": None,
        "duration_ms": 0,
        "ttft_ms": None,
        "input_tokens": plain.json()["usage"]["input_tokens"],
        "output_tokens": plain.json()["usage"]["output_tokens"],
    }
    assert (by_id[failed.headers["x-request-id"]]["status"], by_id[failed.headers["x-request-id"]]["error_code"]) == (
        400,
        "unsupported_parameter",
    )
    stream_line = by_id[streamed.headers["x-request-id"]]
    assert stream_line["stream"] and stream_line["outcome"] == "completed" and stream_line["ttft_ms"] is not None
    assert stream_line["output_tokens"] > 0
    for line in by_id.values():
        assert SECRET_TEXT not in json.dumps(line)


def scrape_metrics() -> str:
    port = ray.nodes()[0]["MetricsExportPort"]
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text


EXPECTED_METRICS = [
    r'ray_serve_app_requests_total\{[^}]*endpoint="responses"[^}]*status="200"',
    r"ray_serve_app_upstream_in_flight\{",
    r"ray_serve_app_upstream_capacity\{",
    r'ray_serve_app_upstream_attempts_total\{[^}]*status="429"',
    r'ray_serve_app_upstream_attempts_total\{[^}]*upstream="primary"',
    r'ray_serve_app_upstream_open\{[^}]*upstream="primary"',
    r'ray_serve_app_upstream_retries_total\{[^}]*status="429"',
    r"ray_serve_app_upstream_rate_limited_total\{",
    r"ray_serve_app_upstream_latency_s_bucket\{",
    r"ray_serve_app_time_to_first_token_s_bucket\{",
    r'ray_serve_app_tokens_total\{[^}]*kind="output"',
    r'ray_serve_app_hosted_tools_left_out_total\{[^}]*type="web_search"',
]


def test_metrics_cover_requests_in_flight_retries_429s_latency_ttft_and_tokens(
    apps: Serve, sim_admin: SimAdmin
) -> None:
    url = apps.base_url("observed")
    sim_admin.fault(429, count=1, retry_after_s=0.1)
    assert httpx.post(f"{url}/responses", json={"input": "hi"}, timeout=30).status_code == 200
    left_out = {"input": "hi", "tools": [{"type": "web_search"}]}
    assert httpx.post(f"{url}/responses", json=left_out, timeout=30).status_code == 200
    with httpx.stream("POST", f"{url}/responses", json={"input": "hi there", "stream": True}, timeout=30) as r:
        r.read()
    text = ""

    def missing() -> list[str]:
        return [pattern for pattern in EXPECTED_METRICS if not re.search(pattern, text)]

    def exported() -> bool:
        nonlocal text
        text = scrape_metrics()
        return not missing()

    # Ray exports replica metrics every few seconds.
    wait_until(exported, lambda: f"metrics missing: {missing()}", timeout_s=45, poll_s=1)
    assert re.search(r'ray_serve_app_requests_total\{[^}]*application="observed"', text)
