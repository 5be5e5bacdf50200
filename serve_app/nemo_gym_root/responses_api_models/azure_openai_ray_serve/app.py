"""Entrypoint of the `azure_openai_ray_serve` model server, run by `gym env start`.

gym runs this file in a venv of its own that has Ray but not `serve_app`. So this process only
joins the Ray cluster and starts the front actor; the actor runs on the cluster's Python, which
has `serve_app` (installed beside nemo-gym), deploys the Serve application and answers on the
host and port gym gave this server (`serve_app.nemo_gym`). SIGINT or SIGTERM, as gym sends on
Ctrl-C, removes the application and ends the actor.
"""

import logging
import os
import signal
import sys
import threading

import ray
import yaml
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0)
class Front:
    def __init__(self, name: str, global_config_yaml: str) -> None:
        try:
            from serve_app.nemo_gym import ModelServerFront
        except ImportError as exc:
            raise RuntimeError(
                f"serve_app is not installed in the Python that runs the Ray cluster ({sys.executable}): "
                "install it in the environment gym runs from"
            ) from exc
        self._front = ModelServerFront(name, global_config_yaml)

    async def start(self) -> str:
        return await self._front.start()

    async def stop(self) -> None:
        await self._front.stop()


def main() -> int:
    name = os.environ["NEMO_GYM_CONFIG_PATH"]
    global_config_yaml = os.environ["NEMO_GYM_CONFIG_DICT"]
    address = (yaml.safe_load(global_config_yaml) or {}).get("ray_head_node_address") or "auto"
    ray.init(address=address, logging_level=logging.WARNING)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    front = Front.options(scheduling_strategy=here).remote(name, global_config_yaml)  # type: ignore[attr-defined]
    try:
        print(f"{name}: serving on {ray.get(front.start.remote())}", flush=True)
        while not stopped.wait(1.0):
            pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        try:
            ray.get(front.stop.remote(), timeout=60)
        finally:
            ray.kill(front)
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
