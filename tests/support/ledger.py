"""The budget ledger's state, read from its Ray actor: who holds which share of N."""

from __future__ import annotations

from typing import Any

import ray

from serve_app.budget import LEDGER_NAMESPACE, ledger_name
from serve_app.config import PRIMARY_UPSTREAM
from serve_app.serve_config import DEPLOYMENT


def ledger_state(app: str, upstream: str = PRIMARY_UPSTREAM) -> dict[str, Any]:
    actor = ray.get_actor(ledger_name(app, DEPLOYMENT, upstream), namespace=LEDGER_NAMESPACE)
    return ray.get(actor.state.remote())


def ledger_members(app: str) -> dict[str, Any]:
    """Replica id -> its entry, for every replica in the app's budget."""
    return ledger_state(app)["members"]
