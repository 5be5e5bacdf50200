#!/usr/bin/env python3
"""Copy configs/serve_config.yaml, verbatim, into the `serveConfigV2` of k8s/rayservice.yaml.

The RayService's `serveConfigV2` *is* the Serve config: edit configs/serve_config.yaml, run this,
commit both. tests/test_k8s.py fails when they drift (it re-runs `embed` and compares bytes).
Only the `serveConfigV2: |` block is rewritten; the rest of the manifest is edited by hand.

    .venv/bin/python k8s/sync_serve_config.py            # rewrite k8s/rayservice.yaml
    .venv/bin/python k8s/sync_serve_config.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "serve_config.yaml"
MANIFEST = ROOT / "k8s" / "rayservice.yaml"

_KEY = re.compile(r"^(?P<indent> *)serveConfigV2: *\|[-+]?[ \t]*$")


def embed(manifest: str, config: str) -> str:
    """`manifest` with its `serveConfigV2: |` block replaced by `config`, indented two spaces deeper."""
    lines = manifest.splitlines()
    starts = [i for i, line in enumerate(lines) if _KEY.match(line)]
    if len(starts) != 1:
        raise ValueError(f"expected one 'serveConfigV2: |' line in the manifest, found {len(starts)}")
    start = starts[0]
    indent = len(_KEY.match(lines[start]).group("indent"))  # type: ignore[union-attr]
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # blank lines before the next key stay where they are

    body = config.rstrip("\n").splitlines()
    first = next((line for line in body if line.strip()), "")
    if first[:1].isspace():
        raise ValueError("the Serve config's first line is indented; a YAML block scalar cannot start that way")
    pad = " " * (indent + 2)
    block = [" " * indent + "serveConfigV2: |"] + [pad + line if line.strip() else "" for line in body]
    result = "\n".join(lines[:start] + block + lines[end:]) + "\n"

    embedded = _serve_config_v2(result)
    if yaml.safe_load(embedded) != yaml.safe_load(config):
        raise AssertionError("embedding changed the Serve config's meaning")  # a bug here, not in the input
    return result


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _serve_config_v2(manifest: str) -> str:
    docs = [d for d in yaml.safe_load_all(manifest) if d and d.get("kind") == "RayService"]
    return docs[0]["spec"]["serveConfigV2"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether the manifest is up to date")
    options = parser.parse_args(argv)

    config = CONFIG.read_text()
    sys.path.insert(0, str(ROOT))  # the checkout's serve_app, whether or not it is installed
    try:
        from serve_app.serve_config import check
    except ImportError:
        print("error: serve_app is not importable; run this with the project's .venv/bin/python", file=sys.stderr)
        return 2
    problems = check(yaml.safe_load(config) or {})
    if problems:
        for problem in problems:
            print(f"{CONFIG.relative_to(ROOT)}: {problem}", file=sys.stderr)
        print("error: not embedding a Serve config that `python -m serve_app check-config` rejects", file=sys.stderr)
        return 1

    current = MANIFEST.read_text()
    wanted = embed(current, config)
    name = MANIFEST.relative_to(ROOT)
    if current == wanted:
        print(f"{name}: serveConfigV2 is up to date")
        return 0
    if options.check:
        print(
            f"{name}: serveConfigV2 differs from {CONFIG.relative_to(ROOT)}; "
            "run .venv/bin/python k8s/sync_serve_config.py",
            file=sys.stderr,
        )
        return 1
    MANIFEST.write_text(wanted)
    print(f"{name}: serveConfigV2 updated from {CONFIG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
