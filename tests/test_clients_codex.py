"""The Codex CLI (`codex exec`, a custom provider with `wire_api = "responses"`) against the app on the simulator.

The simulator calls the first tool offered with the prompt as its string arguments, so Codex runs the
prompt as a shell command: the prompts are harmless commands, and Codex runs read-only in a scratch
directory, with its home (config, sessions) in a temporary directory and every feature that could reach
beyond the provider (web search, plugins, apps) turned off."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.serve import Serve, sim_app
from support.sim_admin import SimAdmin
from support.wire_record import REASONING_UPSTREAM, RecordingProxy, validate_exchanges

from serve_app.simulator import PARALLEL_TOOLS, BackgroundSimulator

CODEX_DIR = Path(__file__).resolve().parent.parent / "build" / "codex"
CODEX_BIN = Path(os.environ.get("CODEX_BIN") or CODEX_DIR / "node_modules" / ".bin" / "codex")


def _not_installed() -> str:
    log = CODEX_DIR / "install.log"
    why = log.read_text()[-500:] if log.exists() else "not installed (make test-clients installs it)"
    return f"Codex CLI missing at {CODEX_BIN}: {why}"


# Decided before any fixture runs: a missing CLI starts no Ray.
pytestmark = [
    pytest.mark.serve,
    pytest.mark.clients,
    pytest.mark.skipif(not CODEX_BIN.exists(), reason=_not_installed()),
]

APP = "codex_model"
# Known to Codex's model catalog: it offers the freeform `apply_patch` tool and `tool_search`.
CATALOG_MODEL = "gpt-5.5"
# Unknown to it: it falls back to generic settings (`reasoning.summary`, a `namespace` tool).
UNKNOWN_MODEL = "our-policy-model"


@pytest.fixture(scope="module")
def apps(serve_instance: Serve, simulator: BackgroundSimulator) -> Serve:
    serve_instance.deploy(sim_app(APP, simulator, **REASONING_UPSTREAM))
    return serve_instance


@pytest.fixture
def proxy(apps: Serve) -> Iterator[RecordingProxy]:
    with RecordingProxy(apps.url) as recording:
        yield recording


@dataclass
class CodexRun:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    last_message: str

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [e["item"] for e in self.events if e["type"] == "item.completed" and e["item"]["type"] == kind]

    def errors(self) -> list[str]:
        return [e["message"] for e in self.events if e["type"] == "error"]


def run_codex(base_url: str, tmp_path: Path, model: str, prompt: str) -> CodexRun:
    home, scratch = tmp_path / "codex-home", tmp_path / "scratch"
    home.mkdir()
    scratch.mkdir()
    (home / "config.toml").write_text(
        f"""model_provider = "serve"

[model_providers.serve]
name = "Ray Serve on the simulator"
base_url = "{base_url}"
wire_api = "responses"
"""
    )
    last = tmp_path / "last-message.txt"
    command = [
        str(CODEX_BIN),
        "exec",
        *("-c", 'web_search="disabled"'),
        *("--disable", "plugins", "--disable", "remote_plugin", "--disable", "apps"),
        *("--sandbox", "read-only", "--cd", str(scratch), "--skip-git-repo-check", "--ephemeral"),
        *("--model", model, "--json", "--color", "never", "--output-last-message", str(last)),
        prompt,
    ]
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home), "LANG": "C.UTF-8"}
    done = subprocess.run(
        command, env=env, cwd=scratch, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return CodexRun(done.returncode, events, done.stderr, last.read_text() if last.exists() else "")


def assert_completed_a_shell_tool_turn(run: CodexRun, sim_admin: SimAdmin, marker: str) -> None:
    assert run.returncode == 0 and not run.errors(), f"Codex failed: {run.errors()}\n{run.stderr[-2000:]}"
    assert run.events[-1]["type"] == "turn.completed", run.events[-3:]
    commands = run.items("command_execution")
    assert commands and marker in commands[0]["command"], commands
    assert marker in commands[0]["aggregated_output"], commands[0]
    # Upstream: the first request offered Codex's tools; the second carried the call and its output back.
    upstream = [r["body"] for r in sim_admin.requests()]
    assert len(upstream) >= 2, upstream
    first, second = upstream[0], upstream[1]
    assert first["tools"] and first["stream"] is True
    call = next(m for m in second["messages"] if m["role"] == "assistant" and m.get("tool_calls"))
    output = next(m for m in second["messages"] if m["role"] == "tool")
    assert output["tool_call_id"] == call["tool_calls"][0]["id"] and marker in str(output["content"])
    # The simulator's last answer reports the tool's result, and Codex shows it as its final message.
    assert "returned:" in run.last_message and marker in run.last_message


@pytest.mark.parametrize("model", [CATALOG_MODEL, UNKNOWN_MODEL])
def test_codex_exec_completes_a_shell_tool_turn(apps: Serve, sim_admin: SimAdmin, tmp_path: Path, model: str) -> None:
    marker = f"codex-through-serve-{model}"
    run = run_codex(apps.base_url(APP), tmp_path, model, f"echo {marker}")
    assert_completed_a_shell_tool_turn(run, sim_admin, marker)


@pytest.mark.parametrize("model", [CATALOG_MODEL, UNKNOWN_MODEL])
def test_every_answer_codex_got_validates_against_openai_python(
    apps: Serve, proxy: RecordingProxy, sim_admin: SimAdmin, tmp_path: Path, model: str
) -> None:
    run = run_codex(f"{proxy.base_url}/{APP}/v1", tmp_path, model, "echo validated")
    assert_completed_a_shell_tool_turn(run, sim_admin, "validated")
    exchanges = proxy.recorder.responses()
    assert proxy.recorder.refusals() == []
    assert all(e.request_headers["accept-encoding"] == "zstd,gzip" and e.streamed for e in exchanges)
    first, second = validate_exchanges(proxy.recorder)
    assert [item.type for item in first.output] == ["function_call"] and first.output[0].name == "exec_command"
    assert second.output_text == run.last_message
    # Each tool Codex sent reaches Azure as a function of its own (a namespace's tools one by one): custom
    # apply_patch and tool_search for the catalog model, the multi_agent_v1 namespace for the unknown one.
    sent = exchanges[0].request["tools"]
    kinds = {t["type"] for t in sent}
    if model == CATALOG_MODEL:
        assert {"custom", "tool_search"} <= kinds, kinds
    else:
        assert "namespace" in kinds, kinds
    offered = [t["function"]["name"] for t in sim_admin.requests()[0]["body"]["tools"]]
    assert len(set(offered)) == len(offered) == sum(len(t.get("tools", ())) or 1 for t in sent), offered


# The simulator gives the prompt, whole, to every tool's string arguments (the trigger calls them all), so
# `apply_patch` receives this patch. Codex parses it and then refuses to write in its read-only sandbox.
PATCH = f"""*** Begin Patch
*** Add File: notes.txt
+{PARALLEL_TOOLS}
*** End Patch"""


def test_codex_apply_patch_round_trips_as_a_custom_tool_call(
    apps: Serve, proxy: RecordingProxy, tmp_path: Path
) -> None:
    run = run_codex(f"{proxy.base_url}/{APP}/v1", tmp_path, CATALOG_MODEL, PATCH)
    assert run.returncode == 0 and run.events[-1]["type"] == "turn.completed", f"{run.errors()}\n{run.stderr[-2000:]}"
    assert proxy.recorder.refusals() == []
    first, second = proxy.recorder.responses()
    events = first.events()
    (patch_input,) = [e for e in events if e["type"] == "response.custom_tool_call_input.done"]
    assert patch_input["input"] == PATCH
    assert "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta") == PATCH
    answer, _ = validate_exchanges(proxy.recorder)
    (call,) = [item for item in answer.output if item.type == "custom_tool_call"]
    assert call.name == "apply_patch" and call.input == PATCH
    assert any(item.type == "tool_search_call" for item in answer.output)
    # Codex replays the call as it got it, and answers it with a custom_tool_call_output.
    replayed = {item["type"]: item for item in second.request["input"] if item.get("call_id") == call.call_id}
    assert replayed["custom_tool_call"]["input"] == PATCH and replayed["custom_tool_call"]["name"] == "apply_patch"
    assert "read-only sandbox" in replayed["custom_tool_call_output"]["output"]
    assert any(item["type"] == "tool_search_output" for item in second.request["input"])
    assert "apply_patch returned: patch rejected" in run.last_message
    assert not (tmp_path / "scratch" / "notes.txt").exists()
