"""The real NeMo Gym drives our model server: `gym env start` with our component, `gym eval run` over the
rollouts that nemo-gym ships (the weather tool example and mcqa), two model servers in one Ray cluster.

`make test-nemo-gym` installs nemo-gym 0.7.0 in a Python 3.13 venv of its own (with this project) and runs
this module there. Elsewhere (plain `make test`, Python 3.11) it is skipped, saying why.

Starting gym costs a minute or more, so the tests share one gym session and read as a scenario, in file order:
rollouts are collected first, then what they left behind (the simulator's peak, gym's metrics) is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.ports import free_port

from serve_app.nemo_gym import component_root
from serve_app.simulator import BackgroundSimulator, SimulatorConfig, sleep_trigger

pytestmark = pytest.mark.nemo_gym

REQUIRED = os.environ.get("SERVE_APP_REQUIRE_NEMO_GYM") == "1"  # set by make test-nemo-gym: a missing peer fails
SIM_KEY = "sim-key"
BUDGET = 2  # policy_model's num_concurrent_requests; the rollouts run 8 at a time
CONCURRENCY = 8
UV_CONFIG = Path(__file__).with_name("nemo_gym_uv.toml")


def _nemo_gym_root() -> Path:
    try:
        import nemo_gym
    except ImportError:
        reason = "nemo-gym 0.7.0 needs Python 3.13 and its own venv: run `make test-nemo-gym`"
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    root: Path = nemo_gym.PARENT_DIR
    return root


def _gym_tools() -> tuple[Path, Path]:
    root = _nemo_gym_root()
    bin_dir = Path(sys.executable).parent
    for tool in ("gym", "uv", "ray"):
        if not (bin_dir / tool).exists():
            pytest.fail(f"{tool} is not installed beside {sys.executable} (make test-nemo-gym installs it)")
    return root, bin_dir


@pytest.fixture(scope="module")
def gym() -> Iterator[Gym]:
    """gym starts its own Ray cluster, with two model servers of ours, the weather example and mcqa."""
    root, bin_dir = _gym_tools()
    with BackgroundSimulator(SimulatorConfig(api_keys=(SIM_KEY,), latency_s=0.3)) as sim:
        instance = Gym(root, bin_dir, sim)
        try:
            instance.start(gym_config(sim.base_url), servers=("policy_model", "judge_model"))
            yield instance
        finally:
            instance.stop()


class Gym:
    """`gym env start` in a scratch folder, as a user would run it, with our component on its search path."""

    def __init__(self, root: Path, bin_dir: Path, sim: BackgroundSimulator) -> None:
        self.root, self.sim = root, sim
        self.cwd = Path(os.environ.get("SERVE_APP_GYM_WORKDIR") or _scratch())
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.config = self.cwd / "gym.yaml"
        self.env = {
            **without_ray_settings(),
            "NEMO_GYM_EXTRA_ROOTS": str(component_root()),
            # uv builds each server's venv and must find this Python (it downloads none here).
            "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.base_prefix) / "bin"), os.environ["PATH"]]),
        }
        if sys.version_info < (3, 13, 14):
            self.env["UV_CONFIG_FILE"] = str(UV_CONFIG)
        self.head_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.cwd / "gym.log"

    @property
    def sim_url(self) -> str:
        return self.sim.base_url

    def start(self, config: dict[str, Any], servers: tuple[str, ...]) -> None:
        # Server venvs and uv's cache live in the test's venv, so that a second run builds nothing again.
        reused = {
            "uv_venv_dir": str(Path(sys.prefix) / "gym-servers"),
            "cache_dir": str(Path(sys.prefix) / "gym-cache"),
        }
        settings = {**config, **reused, "head_server": {"port": self.head_port}}
        self.config.write_text(yaml.safe_dump(settings))
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gym"), "env", "start", "--config", str(self.config)],
            cwd=self.cwd,
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 900  # the first run builds every server's venv
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gym env start exited {self.process.returncode}:\n{self.tail()}")
            if all(self.ready(name) for name in servers):
                return
            time.sleep(2)
        pytest.fail(f"gym env start not ready after 900 s:\n{self.tail()}")

    def ports(self) -> dict[str, int]:
        """Where gym put each model server, from its head server's view of the global config."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.head_port}/global_config_dict_yaml", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return {}
        config = yaml.safe_load(text) or {}
        return {
            name: section["responses_api_models"]["azure_openai_ray_serve"]["port"]
            for name, section in config.items()
            if isinstance(section, dict) and "azure_openai_ray_serve" in section.get("responses_api_models", {})
        }

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports()[name]}"

    def ready(self, name: str) -> bool:
        if name not in self.ports():
            return False
        try:
            return httpx.get(self.url(name), timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def eval_run(self, agent: str, data: str, output: Path) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "gym"), "eval", "run", "--no-serve", "--config", str(self.config)]
        command += ["--agent", agent, "--input", str(self.root / data), "--output", str(output)]
        command += ["--concurrency", str(CONCURRENCY)]
        return subprocess.run(command, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=600)

    def interrupt(self) -> int:
        """Ctrl-C, as a user stops gym; its exit code."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=120)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        if not os.environ.get("SERVE_APP_GYM_WORKDIR"):
            shutil.rmtree(self.cwd, ignore_errors=True)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def without_ray_settings() -> dict[str, str]:
    """This environment, less anything of a Ray this test session may run (its address, Serve's switches)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}


def _scratch() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="serve-app-gym-")


def gym_config(sim_url: str) -> dict[str, Any]:
    """What a NeMo Gym user writes: our component's config, the environments, and their settings."""
    component = "responses_api_models/azure_openai_ray_serve/configs/azure_openai_ray_serve.yaml"
    return {
        "config_paths": [
            component,
            "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml",
            "resources_servers/mcqa/configs/mcqa.yaml",
        ],
        "policy_base_url": sim_url,
        "policy_api_key": SIM_KEY,
        "policy_model_name": "gpt-4o",
        "policy_model": {
            "responses_api_models": {
                "azure_openai_ray_serve": {
                    "default_query": {"api-version": "2024-10-21"},
                    "num_concurrent_requests": BUDGET,
                    "num_replicas": 2,
                }
            }
        },
        # A second model server in the same cluster, on the built-in simulator: no credentials at all.
        "judge_model": {
            "responses_api_models": {
                "azure_openai_ray_serve": {
                    "entrypoint": "app.py",
                    "simulate": True,
                    "openai_model": "judge",
                    "default_query": {"api-version": "2024-10-21"},
                    "num_concurrent_requests": 1,
                }
            }
        },
    }


def rollouts(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def examples(gym: Gym, data: str) -> int:
    return sum(1 for line in (gym.root / data).read_text().splitlines() if line.strip())


WEATHER_DATA = "resources_servers/example_single_tool_call/data/example.jsonl"
MCQA_DATA = "resources_servers/mcqa/data/example.jsonl"


def collect(gym: Gym, agent: str, data: str, name: str) -> list[dict[str, Any]]:
    """`gym eval run` over one shipped example file: every example comes back as a rollout."""
    output = gym.cwd / f"{name}_rollouts.jsonl"
    run = gym.eval_run(agent, data, output)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    collected = rollouts(output)
    assert len(collected) == examples(gym, data)
    return collected


def test_weather_rollouts_call_get_weather_and_earn_full_reward(gym: Gym) -> None:
    httpx.post(f"{gym.sim_url}/sim/reset").raise_for_status()
    for rollout in collect(gym, "example_single_tool_call_simple_agent", WEATHER_DATA, "weather"):
        calls = [item for item in rollout["response"]["output"] if item["type"] == "function_call"]
        assert [call["name"] for call in calls][:1] == ["get_weather"], rollout["response"]["output"]
        assert rollout["reward"] == 1.0
        assert rollout["response"]["usage"]["input_tokens"] > 0
        assert rollout["response"]["status"] == "completed"


def test_budget_holds_with_more_rollouts_in_parallel_than_slots(gym: Gym) -> None:
    peak = httpx.get(f"{gym.sim_url}/sim/stats").json()["peak_in_flight"]
    assert peak == BUDGET, f"{CONCURRENCY} rollouts at once through {BUDGET} slots reached {peak} in flight"


def test_mcqa_rollouts_are_scored(gym: Gym) -> None:
    for rollout in collect(gym, "mcqa_simple_agent", MCQA_DATA, "mcqa"):
        assert rollout["reward"] in (0.0, 1.0)
        assert rollout["response"]["usage"]["output_tokens"] > 0


def test_token_usage_reaches_gym_metrics(gym: Gym) -> None:
    (metrics,) = gym.cwd.glob("weather_rollouts*aggregate_metrics.json")
    agent_metrics = json.loads(metrics.read_text())[0]["agent_metrics"]
    assert agent_metrics["mean/input_tokens"] > 0 and agent_metrics["mean/output_tokens"] > 0, agent_metrics


def test_second_model_server_answers_from_the_simulator(gym: Gym) -> None:
    response = httpx.post(f"{gym.url('judge_model')}/v1/responses", json={"input": "Is 2+2=4?"}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "judge" and body["status"] == "completed"
    assert "Is 2+2=4?" in body["output"][0]["content"][0]["text"]


def test_errors_reach_gym_clients_in_the_openai_envelope(gym: Gym) -> None:
    response = httpx.post(f"{gym.url('policy_model')}/v1/responses", json={"input": 5}, timeout=30)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_frees_its_upstream_slot(gym: Gym, stream: bool) -> None:
    body = {"input": f"{sleep_trigger(30)} take your time", "stream": stream}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gym.url('policy_model')}/v1/responses", json=body, timeout=3)
    deadline = time.monotonic() + 10
    while (in_flight := httpx.get(f"{gym.sim_url}/sim/stats").json()["in_flight"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert in_flight == 0, "the call of a client that left still holds its upstream slot"


def test_ctrl_c_stops_gym_and_removes_our_servers(gym: Gym) -> None:
    urls = [gym.url(name) for name in ("policy_model", "judge_model")]
    assert gym.process is not None
    gym_pid = gym.process.pid
    started = time.monotonic()
    gym.interrupt()
    assert time.monotonic() - started < 60
    for url in urls:
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=2)
    # gym runs in a session of its own (start_new_session): its servers and its Ray cluster stay in it.
    deadline = time.monotonic() + 60
    while (leftover := _processes_in_session(gym_pid)) and time.monotonic() < deadline:
        time.sleep(1)
    assert leftover == [], f"processes left running: {leftover}"


def _processes_in_session(sid: int) -> list[str]:
    table = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout.splitlines()
    return [line.strip() for line in table if line.split()[1:2] == [str(sid)]]


# --- gym joining a Ray cluster that is already running ---------------------------------------------


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A Ray head of our own (`ray start --head --block`, one process group), as a cluster gym is told to join.

    It keeps its files apart (`--temp-dir`): `ray start` records its address in the temp dir, and a later
    `ray.init()` of anyone on the machine that finds it there would join this cluster instead of starting one."""
    import tempfile

    _, bin_dir = _gym_tools()
    port = free_port()
    env = without_ray_settings()
    temp_dir = Path(tempfile.mkdtemp(prefix="rayhead-"))  # short: Ray's socket paths live below it
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2"]
        + ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        env=env,
        stdout=(temp_dir / "head.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while _serve_apps(address) is None:
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the Ray head did not start:\n" + (temp_dir / "head.log").read_text(errors="replace"))
            time.sleep(1)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


# `ray start` turns on Ray's token auth (2.60); a driver joining from outside must say so to send the token.
JOINING = {"RAY_AUTH_MODE": "token"}


def _serve_apps(address: str) -> list[str] | None:
    """The Serve applications of the cluster at `address`, as a separate driver sees them; None if unreachable."""
    script = (
        "import ray, json\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        "from ray import serve\n"
        "try:\n    apps = list(serve.status().applications)\n"
        "except Exception:\n    apps = []\n"
        "print(json.dumps(apps))\n"
    )
    env = {**without_ray_settings(), **JOINING}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return None
    apps: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return apps


def test_gym_joining_a_running_cluster_deploys_there_and_removes_its_app_on_ctrl_c(ray_head: str) -> None:
    root, bin_dir = _gym_tools()
    with BackgroundSimulator(SimulatorConfig(api_keys=(SIM_KEY,))) as sim:
        gym = Gym(root, bin_dir, sim)
        gym.env.update(JOINING)
        try:
            config = {**gym_config(sim.base_url), "ray_head_node_address": ray_head}
            del config["judge_model"]
            config["config_paths"] = config["config_paths"][:1]
            gym.start(config, servers=("policy_model",))
            assert _serve_apps(ray_head) == ["policy_model"]
            answer = httpx.post(f"{gym.url('policy_model')}/v1/responses", json={"input": "hello"}, timeout=30)
            assert answer.status_code == 200 and answer.json()["status"] == "completed"
            gym.interrupt()
            deadline = time.monotonic() + 30
            while (apps := _serve_apps(ray_head)) and time.monotonic() < deadline:
                time.sleep(1)
            assert apps == [], f"gym stopped, but the cluster still runs {apps}"
        finally:
            gym.stop()
