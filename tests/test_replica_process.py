"""What a replica does to its own Python process, without Ray: its collector's settings."""

from __future__ import annotations

import gc

from serve_app import server


def test_a_replica_collects_rarely_and_never_over_what_it_was_built_with() -> None:
    threshold = gc.get_threshold()
    try:
        server.tune_collector()
        assert gc.get_threshold()[0] == server.GC_GEN0_THRESHOLD
        # Everything built so far (here: the test session, the app's modules) is out of every collection's way.
        assert gc.get_freeze_count() > 10 * len(gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
