"""The deployment-wide concurrency budget: N upstream slots divided exactly among live replicas.

Replica i of R (ordered by Serve rank) is entitled to `N // R + (1 if i < N % R else 0)` while
every replica has work for its share or none has more than its share (`share`); when some replica
queues more than its share while another leaves part of its own unused, the unused slots follow
the queue (`division`). Serve
cannot do this alone: a replica's `world_size` goes stale when `num_replicas` changes, and a
redeploy starts new replicas with the new config before it reconfigures the old ones, so shares
computed independently overshoot N during every change. So one ledger holds the truth and
replicas ask it for their share:

- Each replica syncs every `interval_s` (and at once after a config change), reporting its rank,
  the N it was configured with, its current capacity and its calls in flight.
- The ledger grants a replica `min(entitlement, N - what every other replica might be using)`,
  where what replica j might be using is `max(last grant, reported capacity, reported in flight)`.
  A grown grant counts from the moment it is given; a shrunk one only once the replica reports
  it applied it. Calls in flight above a shrunk capacity finish normally and hold their share
  until they do. So the calls in flight never exceed N, during changes included, and settle on the
  exact division once the change has drained.
- Membership is a lease, fenced on both sides. A replica admits calls only while its last
  confirmed sync is younger than `FENCE` x `lease_s`, measured on its own clock from when it sent
  that sync, and every ledger call has a deadline; so a replica cut off from the ledger, or frozen,
  stops admitting before its lease could run out. The ledger gives a silent replica's share to
  others only once Ray confirms that replica's actor is gone (its process, and so its calls, died
  with it): a replica that is merely stalled, or a ledger that was itself stalled and finds every
  lease run out, never has its share counted twice.
- The ledger is one named, detached actor per application, deployment and upstream (each upstream of
  a pool has its own N: upstreams.py), shared by every code version, so a rolling upgrade (two
  versions side by side) divides one N, not two. If it
  restarts empty, replicas report what they hold, and it grows nobody for one lease so that
  everyone still holding a share has reported first.

`BudgetLedger` is the bookkeeping (pure, clock injected); `LedgerActor` hosts it in Ray;
`BudgetMember` is the replica side that keeps a `Limiter` at the granted capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .config import PRIMARY_UPSTREAM
from .limiter import Limiter

logger = logging.getLogger("ray.serve")

# A killed replica stops syncing; its share returns to the others after a lease. Twenty missed
# heartbeats is ample for a live replica, and keeps that wait short. (Tests shorten it.)
LEASE_S = float(os.environ.get("SERVE_APP_BUDGET_LEASE_S", "10"))
# A member stops admitting this far into its lease without a confirmed sync: strictly before the
# ledger may count the lease as run out, with room for a sync's deadline and scheduling delays.
FENCE = 0.8
# Every ledger call's deadline: a stalled ledger must look unreachable, not keep a member waiting.
CALL_TIMEOUT_S = 2.0
INTERVAL_S = 0.5
CATCH_UP_INTERVAL_S = 0.05
# While requests wait in its queue, and for a while after it emptied (its calls ending one by one), a replica
# syncs this often: slots others leave unused are its now, or its own unused ones should go to others' queues.
QUEUED_INTERVAL_S = 0.1
QUEUE_AFTERMATH_S = 1.0
IDLE_EXIT_S = 600.0


def share(total: int, count: int, position: int) -> int:
    return total // count + (1 if position < total % count else 0)


def division(total: int, demands: list[int]) -> list[int]:
    """The entitlements of replicas in rank order, given each one's demand (calls in flight plus queued).

    Each keeps its equal share, or what it needs if less; the slots left over go to the replicas
    that queue more than their share, in proportion to that excess (largest remainder, rank order
    on ties). Whatever is still unassigned goes back towards the equal shares, so an idle replica
    keeps capacity for what arrives next. Without this, a balancer that evens out requests (not
    slots) leaves the smaller share's queue to drain alone at the end of a run, with the other
    replicas' slots idle.
    """
    count = len(demands)
    base = [share(total, count, i) for i in range(count)]
    kept = [min(b, d) for b, d in zip(base, demands, strict=True)]
    spare = total - sum(kept)
    excess = [d - k for d, k in zip(demands, kept, strict=True)]
    wanted = sum(excess)
    if wanted <= spare:
        extra = excess
    else:
        extra = [spare * e // wanted for e in excess]
        by_remainder = sorted(range(count), key=lambda i: (-(spare * excess[i] % wanted), i))
        for i in by_remainder[: spare - sum(extra)]:
            extra[i] += 1
    granted = [k + x for k, x in zip(kept, extra, strict=True)]
    left = total - sum(granted)
    for i in range(count):
        top_up = min(left, max(0, base[i] - granted[i]))
        granted[i] += top_up
        left -= top_up
    return granted


@dataclass
class Grant:
    capacity: int  # what the replica may admit now
    entitled: int  # its exact share once the deployment has settled


@dataclass
class _Member:
    rank: int
    granted: int
    capacity: int
    in_flight: int
    seen: float
    waiting: int = 0

    def bound(self) -> int:
        """The most this replica can be using: nothing it was granted or still holds is free."""
        return max(self.granted, self.capacity, self.in_flight)


class BudgetLedger:
    def __init__(self, *, lease_s: float = LEASE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._lease_s = lease_s
        self._clock = clock
        self._total = 0
        self._members: dict[str, _Member] = {}
        self._frozen_until = float("-inf")

    def sync(self, replica_id: str, *, rank: int, total: int, capacity: int, in_flight: int, waiting: int = 0) -> Grant:
        now = self._clock()
        self._total = total  # the newest config a replica reports is the one in force
        member = self._members.get(replica_id)
        if member is None:
            if capacity or in_flight:
                # It holds a share from a ledger before this one: others may too, and have not reported yet.
                self._frozen_until = now + self._lease_s
            member = self._members[replica_id] = _Member(rank, capacity, capacity, in_flight, now)
        member.rank, member.capacity, member.in_flight, member.seen = rank, capacity, in_flight, now
        member.waiting = waiting
        entitled = self._entitlement(replica_id)
        others = sum(m.bound() for rid, m in self._members.items() if rid != replica_id)
        granted = max(0, min(entitled, self._total - others))
        if now < self._frozen_until:
            granted = min(granted, capacity)
        member.granted = granted
        return Grant(granted, entitled)

    def leave(self, replica_id: str) -> None:
        self._members.pop(replica_id, None)

    def overdue(self) -> list[str]:
        """Members not heard from for a lease: dropped (`leave`) only once proven stopped."""
        now = self._clock()
        return [rid for rid, m in self._members.items() if now - m.seen > self._lease_s]

    def state(self) -> dict[str, Any]:
        return {
            "total": self._total,
            "members": {
                rid: {"rank": m.rank, "granted": m.granted, "capacity": m.capacity, "in_flight": m.in_flight}
                for rid, m in sorted(self._members.items(), key=lambda kv: (kv[1].rank, kv[0]))
            },
        }

    def idle(self) -> bool:
        return not self._members

    def _entitlement(self, replica_id: str) -> int:
        order = sorted(self._members, key=lambda rid: (self._members[rid].rank, rid))
        demands = [self._members[rid].in_flight + self._members[rid].waiting for rid in order]
        return division(self._total, demands)[order.index(replica_id)]


class LedgerActor:
    """`BudgetLedger` as a Ray actor (async, so calls never queue behind one another)."""

    def __init__(self, lease_s: float = LEASE_S, idle_exit_s: float = IDLE_EXIT_S) -> None:
        self._ledger = BudgetLedger(lease_s=lease_s)
        self._idle_exit_s = idle_exit_s
        self._reaper: asyncio.Task[None] | None = None

    async def sync(
        self, replica_id: str, rank: int, total: int, capacity: int, in_flight: int, waiting: int = 0
    ) -> tuple[int, int]:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
        grant = self._ledger.sync(
            replica_id, rank=rank, total=total, capacity=capacity, in_flight=in_flight, waiting=waiting
        )
        return grant.capacity, grant.entitled

    async def leave(self, replica_id: str) -> None:
        self._ledger.leave(replica_id)

    async def state(self) -> dict[str, Any]:
        return self._ledger.state()

    async def _reap(self) -> None:
        import ray

        idle_since = time.monotonic()
        while True:
            await asyncio.sleep(INTERVAL_S)
            for rid in self._ledger.overdue():
                if await replica_stopped(rid):
                    logger.info("budget: replica %s stopped; its share returns to the others", rid)
                    self._ledger.leave(rid)
            # Detached actors outlive the apps that made them; this one goes once nobody has used it for a while.
            if not self._ledger.idle():
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > self._idle_exit_s:
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


async def replica_stopped(replica_id: str) -> bool:
    """Whether Ray confirms the replica's actor (named by its full Serve id) is gone.

    Anything short of that (the GCS slow or unreachable) counts as alive: its share waits rather
    than have two holders. A name Ray never knew (a member from an older version, keyed otherwise)
    counts as gone, which is what a lease alone meant before."""
    import ray

    try:
        await asyncio.wait_for(asyncio.to_thread(ray.get_actor, replica_id, namespace="serve"), CALL_TIMEOUT_S)
    except ValueError:
        return True
    except Exception:
        return False
    return False


LEDGER_NAMESPACE = "serve_app"

SyncFn = Callable[[str, int, int, int, int, int], Awaitable[tuple[int, int]]]
LeaveFn = Callable[[str], Awaitable[None]]


def ledger_name(app: str, deployment: str, upstream: str = PRIMARY_UPSTREAM) -> str:
    # The top-level upstream keeps the name a model server's only ledger always had: upgrades find it.
    base = f"serve_app_budget:{app}:{deployment}"
    return base if upstream == PRIMARY_UPSTREAM else f"{base}:{upstream}"


def get_or_create_ledger(app: str, deployment: str, upstream: str = PRIMARY_UPSTREAM) -> Any:
    import ray

    remote = ray.remote(LedgerActor).options(
        name=ledger_name(app, deployment, upstream),
        namespace=LEDGER_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=-1,
        max_concurrency=1000,
    )
    return remote.remote()


def ray_ledger(app: str, deployment: str, upstream: str = PRIMARY_UPSTREAM) -> tuple[SyncFn, LeaveFn]:
    """sync/leave calls to the ledger actor, finding it again (or making a new one) after it died."""
    handle: Any = None

    def ledger() -> Any:
        nonlocal handle
        if handle is None:
            handle = get_or_create_ledger(app, deployment, upstream)
        return handle

    async def sync(
        replica_id: str, rank: int, total: int, capacity: int, in_flight: int, waiting: int
    ) -> tuple[int, int]:
        nonlocal handle
        try:
            granted: tuple[int, int] = await ledger().sync.remote(replica_id, rank, total, capacity, in_flight, waiting)
            return granted
        except Exception:  # not a deadline's cancellation: a stalled ledger is still the one to ask
            handle = None
            raise

    async def leave(replica_id: str) -> None:
        await ledger().leave.remote(replica_id)

    return sync, leave


class BudgetMember:
    """The replica's side: keeps `limiter` at the capacity the ledger grants, for as long as its lease holds.

    `clock` must be the limiter's clock: the capacity's expiry is set on one and checked on the other.
    `queued` counts the calls waiting for a slot of this budget: the limiter has no queue, the replica's
    pool of upstreams does (one queue for all their limiters), so only the caller can say."""

    def __init__(
        self,
        limiter: Limiter,
        replica_id: str,
        sync: SyncFn,
        *,
        queued: Callable[[], int],
        lease_s: float = LEASE_S,
        interval_s: float = INTERVAL_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limiter = limiter
        self._queued = queued
        self._replica_id = replica_id
        self._sync = sync
        self._fence_s = lease_s * FENCE
        self._interval_s = interval_s
        self._call_timeout_s = call_timeout_s
        self._clock = clock
        self._total = 0
        self._rank = 0
        self.entitled = 0
        self._reported = 0  # the capacity the ledger last heard from us
        self._queued_at = float("-inf")  # when requests were last seen waiting here
        self._last_ok = clock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def configure(self, total: int, rank: int) -> None:
        """The N configured and this replica's rank; the running member syncs at once with them."""
        self._total, self._rank = total, rank
        self._wake.set()

    def start(self) -> None:
        """Sync every `interval_s` from now on (more often while not settled)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def sync_once(self) -> None:
        sent = self._clock()
        limiter = self._limiter
        report = (self._replica_id, self._rank, self._total, limiter.capacity, limiter.in_use, self._queued())
        try:
            granted, self.entitled = await asyncio.wait_for(self._sync(*report), self._call_timeout_s)
        except Exception as exc:  # the ledger is restarting, stalled or unreachable: keep what we hold, for a while
            if sent - self._last_ok > self._fence_s and self._limiter.capacity:
                logger.warning(
                    "budget ledger unreachable for %.0f s; admitting no new upstream calls (%r)",
                    sent - self._last_ok,
                    exc,
                )
                self._limiter.resize(0)  # and report so: what we hold is only the calls still in flight
            raise
        # Measured from sending: the ledger heard us at that moment or later, so we fence before it could
        # count our lease as run out, even if this process is frozen right now and wakes past it.
        self._last_ok = sent
        self._reported = report[3]
        self._limiter.resize(granted, until=sent + self._fence_s)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.sync_once()
                # Until it holds its whole share, is not draining above it and the ledger knows what it holds
                # (a shrink counts once reported), others may be waiting on it.
                limiter = self._limiter
                settled = limiter.capacity == self.entitled == self._reported and limiter.in_use <= limiter.capacity
            except asyncio.CancelledError:
                raise
            except Exception:
                settled = False
            now = self._clock()
            if self._queued():
                self._queued_at = now
            if not settled:
                delay = CATCH_UP_INTERVAL_S
            elif now - self._queued_at < QUEUE_AFTERMATH_S:
                delay = min(self._interval_s, QUEUED_INTERVAL_S)
            else:
                delay = self._interval_s
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def leave(self, leave: LeaveFn) -> None:
        if self._task is not None:
            self._task.cancel()
        self._limiter.resize(0)
        await asyncio.wait_for(leave(self._replica_id), self._call_timeout_s)
