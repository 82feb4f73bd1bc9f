"""Pacing a backfill: batch sizes toward a target duration, and when to pause. Pure.

Contract:

- :func:`next_size` is the next batch's size from the last one and how long it took:
  proportional to ``target / elapsed``, but never more than double or less than half
  the last size in one step (a single slow batch — a checkpoint, a vacuum — must not
  collapse the pace), clamped to ``[min_batch, max_batch]``. ``target <= 0`` keeps the
  size. :func:`shrink` halves it after a lock timeout, deadlock or statement timeout.
- :func:`pause_reason` compares database signals sampled between batches
  (:class:`Signals`) with the ones sampled before the first batch and the previous ones,
  and says why to pause (None: go on): the deadlock counter rose since the last sample;
  more sessions wait for locks than before the backfill started; a standby's replay lag
  (``pg_stat_replication``, where the role may see it) is above the limit.
"""

from __future__ import annotations

from dataclasses import dataclass


def next_size(size: int, elapsed: float, target: float, min_batch: int, max_batch: int) -> int:
    """The next batch size (see the module docstring)."""
    if target <= 0:
        return max(min_batch, min(size, max_batch))
    ratio = target / max(elapsed, 1e-3)
    ratio = max(0.5, min(2.0, ratio))
    return max(min_batch, min(max_batch, int(size * ratio)))


def shrink(size: int, min_batch: int) -> int:
    return max(min_batch, size // 2)


@dataclass(frozen=True)
class Signals:
    deadlocks: int  # pg_stat_database.deadlocks of this database
    lock_waiters: int  # sessions (other than ours) waiting for a lock
    replication_lag: float | None  # seconds, the largest replay_lag; None when not visible


def pause_reason(baseline: Signals, previous: Signals, now: Signals, max_lag: float) -> str | None:
    if now.deadlocks > previous.deadlocks:
        n = now.deadlocks - previous.deadlocks
        return f"{n} deadlock{'s' if n != 1 else ''} in the database since the last batch"
    if now.lock_waiters > baseline.lock_waiters:
        return (
            f"{now.lock_waiters} session(s) waiting for locks (before the backfill: "
            f"{baseline.lock_waiters})"
        )
    if now.replication_lag is not None and now.replication_lag > max_lag:
        return f"replication lag {now.replication_lag:.1f}s (limit {max_lag:g}s)"
    return None
