"""`python -m serve_app` or `serve-app`: serve model servers from NeMo Gym config, or run the Azure simulator alone."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from . import cluster, drain
from .config import (
    DEFAULT_CONFIG,
    SIMULATED_DEPLOYMENT,
    SIMULATOR_KEY,
    ConfigError,
    fill_with_simulator,
    find_model_servers,
    load_tree,
    model_servers_from_tree,
)
from .deployment_constants import DEFAULT_TOTAL_S, HARD_STOP_ENV
from .nemo_gym import component_root
from .serve_config import check, model_server_app, model_server_keys, simulator_app

SIMULATOR_APP = "azure_simulator"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # NeMo Gym overrides (+a.b=c) can sit anywhere on the line.
    overrides = [a for a in argv if a.startswith("+") or ("=" in a and not a.startswith("-"))]
    options = _parser().parse_args([a for a in argv if a not in overrides])
    try:
        if options.command == "serve":
            return serve(options, overrides)
        if overrides:
            raise ConfigError([f"'{options.command}' takes no +key=value overrides"])
        if options.command == "check-config":
            return check_config(options.files)
        if options.command == "nemo-gym-root":
            print(component_root())
            return 0
        if options.command == "ingress-env":
            # Some values span lines (HAProxy directives), so they are quoted for the shell's eval.
            for name, value in cluster.ingress_env("haproxy", options.longest_call_s).items():
                print(f"export {name}={shlex.quote(value)}")
            return 0
        return simulate(options)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    # Run as `python -m serve_app` or as the `serve-app` console script.
    prog = "python -m serve_app" if Path(sys.argv[0]).name == "__main__.py" else Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="serve every azure_openai_model server in the config (blocks)")
    serve_cmd.add_argument(
        "--config",
        nargs="+",
        default=[str(DEFAULT_CONFIG)],
        metavar="FILE",
        help="NeMo Gym YAML files, merged in order (default: the packaged azure_openai_model.yaml, which "
        "configs/ in the repository links to)",
    )
    serve_cmd.add_argument("--env-file", default="env.yaml", help="values for ${...} (default: env.yaml, if present)")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on; anyone who can reach it spends your Azure quota"
    )
    serve_cmd.add_argument("--replicas", type=int, default=1, help="replicas per model server; they share its budget")
    serve_cmd.add_argument(
        "--simulate", action="store_true", help="also run the Azure simulator and point every model server at it"
    )
    serve_cmd.add_argument(
        "--ingress",
        choices=cluster.INGRESSES,
        default="haproxy",
        help="HTTP front: HAProxy to each replica (default, fastest) or Serve's proxy",
    )

    serve_cmd.add_argument(
        "--drain-timeout-s",
        type=float,
        default=None,
        help="on Ctrl-C/SIGTERM, how long calls in flight may take to finish (default: the longest call, total_s)",
    )

    sim_cmd = commands.add_parser("simulate", help="run the Azure OpenAI simulator alone (blocks)")
    sim_cmd.add_argument("--port", type=int, default=8000)
    sim_cmd.add_argument("--host", default="127.0.0.1")

    commands.add_parser(
        "nemo-gym-root", help="print the folder to list in NEMO_GYM_EXTRA_ROOTS (holds our NeMo Gym component)"
    )

    env_cmd = commands.add_parser(
        "ingress-env",
        help="print the environment Ray must start with for the HAProxy ingress, for eval in a shell",
    )
    env_cmd.add_argument(
        "--longest-call-s", type=float, default=DEFAULT_TOTAL_S, help="the largest timeouts.total_s to be served"
    )

    check_cmd = commands.add_parser(
        "check-config",
        help=f"check Serve config files for budget, route, secret and timeout mistakes (against {HARD_STOP_ENV} "
        "too, when it is set, as in the Ray pods)",
    )
    check_cmd.add_argument("files", nargs="+", metavar="FILE")
    return parser


def serve(options: argparse.Namespace, overrides: list[str]) -> int:
    tree = load_tree(options.config, overrides, options.env_file)
    simulator_url = f"http://127.0.0.1:{options.port}/{SIMULATOR_APP}"
    if options.simulate:
        point_at_simulator(tree, simulator_url)
    servers = model_servers_from_tree(tree)
    if options.replicas < 1:
        raise ConfigError([f"--replicas must be at least 1, not {options.replicas}"])

    apps: list[dict[str, Any]] = []
    if options.simulate:
        deployments = {config.openai_model: SIMULATED_DEPLOYMENT for config in servers.values()}
        apps.append(
            simulator_app(SIMULATOR_APP, f"/{SIMULATOR_APP}", {"api_keys": [SIMULATOR_KEY], "deployments": deployments})
        )
        _banner(
            f"SIMULATED AZURE: every model server answers from the built-in simulator at {simulator_url}; "
            "nothing leaves this machine. Give real credentials (env.yaml) and drop --simulate to use Azure."
        )
    for name, config in servers.items():
        app = model_server_app(name, config, num_replicas=options.replicas)
        # Replicas are I/O bound; on one machine, CPU reservations would only stop them from starting.
        app["deployments"][0]["ray_actor_options"] = {"num_cpus": 0}
        apps.append(app)

    keys = {env: key for name, config in servers.items() for env, key in model_server_keys(name, config).items()}
    longest_call_s = max(config.timeouts.total_s for config in servers.values())
    cluster.start(
        port=options.port, host=options.host, env=keys, ingress=options.ingress, longest_call_s=longest_call_s
    )
    stopped, cut_short = threading.Event(), threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # the first stops admitting; a second cuts the wait short
        signal.signal(sig, lambda *_: (cut_short if stopped.is_set() else stopped).set())
    try:
        cluster.deploy(apps)
        host = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
        for name in servers:
            print(f"{name}: http://{host}:{options.port}/{name}/v1", flush=True)
        print("Serving; Ctrl-C to stop.", flush=True)
        stopped.wait()
    except BaseException:
        cluster.stop()
        raise
    bound_s = options.drain_timeout_s or max(config.timeouts.total_s for config in servers.values())
    print(f"Stopping: new calls get a 503; finishing those in flight (up to {bound_s:g} s; Ctrl-C again to stop now)")
    drain.stop(apps, bound_s, cut_short)
    return 0


def point_at_simulator(tree: DictConfig, simulator_url: str) -> None:
    """Fill every model server with simulator endpoint and key; keep deployment names, api-versions and the
    API form (classic or v1) the config gives."""
    for section in find_model_servers(tree).values():
        fill_with_simulator(section, simulator_url)


def _banner(text: str) -> None:
    line = "=" * 100
    print(f"{line}\n{text}\n{line}", file=sys.stderr, flush=True)


def check_config(files: list[str]) -> int:
    failed = False
    hard_stop = _hard_stop_after_s()
    for file in files:
        try:
            problems = check(yaml.safe_load(Path(file).read_text()) or {}, hard_stop_after_s=hard_stop)
        except (OSError, yaml.YAMLError) as exc:
            problems = [f"cannot read: {exc}"]
        for problem in problems:
            print(f"{file}: {problem}", file=sys.stderr)
        if not problems:
            print(f"{file}: ok")
        failed = failed or bool(problems)
    return 1 if failed else 0


def _hard_stop_after_s() -> float | None:
    """HAProxy's hard stop, when this environment sets it (a Ray pod's does): calls must not outlast it."""
    value = os.environ.get(HARD_STOP_ENV)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError([f"{HARD_STOP_ENV}={value!r} is not a number of seconds"]) from None


def simulate(options: argparse.Namespace) -> int:
    from .simulator import SimulatorConfig, run

    print(f"Azure OpenAI simulator on http://{options.host}:{options.port} (api-key: {SIMULATOR_KEY})", flush=True)
    run(SimulatorConfig(api_keys=(SIMULATOR_KEY,)), host=options.host, port=options.port)
    return 0
