"""Linting many files on several cores: fork after the imports, merge in file order.

Contract:
- :func:`lint_many` returns exactly what ``linter.lint_files(load(i) for i in
  range(count))`` returns, the same findings in the same order, and raises the
  same first error (unreadable file, unparsable SQL). ``load(i)`` gives file
  *i* as (path, text) and may raise :class:`~pgferry.errors.PgferryError`.
- Files are not independent: the state that carries from file to file (with a
  catalog, the tables pending files created; column types, NOT NULL checks, the
  table of each index the run created) is keyed by table (an index by
  ``"index:schema.name"``), and every file's reads and writes of it are recorded
  (:attr:`~pgferry.lint.model.Context.touched`). Whether a file is applied (its
  tables do not carry) depends on its path alone, so every process agrees.
  A file linted from a state that lacks some earlier files' changes saw
  exactly what a serial run would have shown it when it touched no table
  those files wrote; then its findings stand. Otherwise (and for a file with
  no result: an error, a worker that died) the parent lints it again from the
  true state, which it brings forward by replaying accepted files (parse and
  effects, no rules); nothing later from the process that produced a stale
  result is trusted (its own state may have gone wrong from there on).
  Correctness never depends on the split or the timing; only speed does.
- The split: the parent lints the first files (its slice is exact: nothing
  comes before it). The rest is cut into chunks. Forked workers take chunks
  from the front, in order, each carrying its own state along; the parent,
  once its slice is done, takes chunks from the back, each from the state at
  the end of its slice. A busy core thus gets fewer chunks; both meet in the
  middle. The chunk counters live in shared memory under a POSIX record lock
  (released by the kernel should a holder die).
- Serial (plain :meth:`~pgferry.lint.engine.Linter.lint_files`) without
  ``os.fork``, with one job, or for fewer than :data:`MIN_FILES` files.
- Workers send their results through a pipe (a marshal of tuples, sets and
  strings per chunk: as fast as pickle here, without pickle's import; the
  parent decodes them between its own chunks) and leave with
  ``os._exit``: no output, no atexit handlers, no flushing of inherited buffers.
  The linter must not be reused after a parallel run.
"""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Callable
from dataclasses import fields
from operator import attrgetter
from typing import Any

from pgferry.lint.engine import Linter
from pgferry.lint.model import Finding

#: below this many files a fork costs more than it saves
MIN_FILES = 64

Load = Callable[[int], tuple[str, str]]
#: a Finding as a plain tuple of its fields: a third of the pickling cost of the object
_AS_TUPLE = attrgetter(*(f.name for f in fields(Finding)))
_COUNTERS = struct.Struct("<qq")  # next chunk from the front, end of the chunks not taken
_SIZE = struct.Struct("<I")  # the length before each message from a worker


class _Result:
    """One file linted from a possibly incomplete state, by ``stream``.

    (Plain classes here, not dataclasses: this module is imported on every start.)
    """

    __slots__ = ("stream", "found", "touched", "written")

    def __init__(
        self, stream: int, found: list[Finding], touched: set[str], written: set[str]
    ) -> None:
        self.stream = stream  # >= 0: worker number; < 0: -1 - the parent's chunk number
        self.found = found
        self.touched = touched
        self.written = written


class _Plan:
    __slots__ = ("count", "first", "chunk", "chunks")

    def __init__(self, count: int, first: int, chunk: int) -> None:
        self.count = count
        self.first = first  # files [0, first) are the parent's exact slice
        self.chunk = chunk  # files per chunk after that
        self.chunks = -(-(count - first) // chunk)

    def files(self, c: int) -> range:
        start = self.first + c * self.chunk
        return range(start, min(start + self.chunk, self.count))


def default_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def lint_many(linter: Linter, count: int, load: Load, jobs: int) -> list[Finding]:
    """Lint files ``0 .. count-1`` in order on up to ``jobs`` processes (see module doc)."""
    jobs = min(jobs, count // (MIN_FILES // 2) if count >= MIN_FILES else 1)
    if jobs <= 1 or not hasattr(os, "fork"):
        return linter.lint_files(load(i) for i in range(count))
    import bisect  # noqa: F401 - what a child would import lazily, imported before the fork

    from pgferry.sqltext.parser import parser

    parser()
    first = round(count / jobs * 0.75)
    # small chunks: the last one a process takes is what the other may wait for
    plan = _Plan(count, first, max(2, min(32, (count - first) // (32 * jobs))))
    shared = _Counters(plan.chunks)
    workers: list[tuple[int, int]] = []  # (pid, read fd)
    try:
        for n in range(jobs - 1):
            workers.append(_fork(linter, load, plan, shared, n))
        return _run_parent(linter, load, plan, shared, workers)
    finally:
        for pid, fd in workers:
            _close(fd)
            _reap(pid, kill=True)
        shared.close()


class _Counters:
    """(next chunk from the front, end of the chunks not taken) in a shared file, locked."""

    def __init__(self, chunks: int) -> None:
        import mmap

        try:
            self.fd = os.memfd_create("pgferry-lint")
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            import tempfile

            self.fd, name = tempfile.mkstemp()
            os.unlink(name)
        os.ftruncate(self.fd, _COUNTERS.size)
        self.mem = mmap.mmap(self.fd, _COUNTERS.size)  # MAP_SHARED: forks see one copy
        _COUNTERS.pack_into(self.mem, 0, 0, chunks)

    def take(self, front: bool) -> int | None:
        """The next chunk from the front (workers) or the back (parent); None when none
        is left."""
        import fcntl

        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            nxt, end = _COUNTERS.unpack_from(self.mem, 0)
            if nxt >= end:
                return None
            if front:
                _COUNTERS.pack_into(self.mem, 0, nxt + 1, end)
                return int(nxt)
            _COUNTERS.pack_into(self.mem, 0, nxt, end - 1)
            return int(end - 1)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.mem.close()
        _close(self.fd)


def _lint_tracked(linter: Linter, path: str, text: str) -> tuple[list[Finding], set[str], set[str]]:
    cx = linter.cx
    cx.touched, cx.written = set(), set()
    try:
        found = linter.lint_text(path, text)
        return found, cx.touched, cx.written
    finally:
        cx.touched = cx.written = None


def _fork(linter: Linter, load: Load, plan: _Plan, shared: _Counters, n: int) -> tuple[int, int]:
    r, w = os.pipe()
    try:  # room for the whole result: the worker writes it in one go, and exits
        import fcntl

        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):  # pragma: no cover - not Linux, or capped
        pass
    pid = os.fork()
    if pid:
        os.close(w)
        return pid, r
    code = 0  # pragma: no cover - runs in the worker (coverage does not follow forks)
    try:  # pragma: no cover
        os.close(r)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        import marshal

        going = True
        while going:
            c = shared.take(front=True)
            if c is None:
                break
            results: list[tuple[int, list[tuple[Any, ...]], set[str], set[str]]] = []
            for i in plan.files(c):
                try:
                    found, touched, wrote = _lint_tracked(linter, *load(i))
                except Exception:  # the parent meets it again, in file order
                    going = False
                    break
                results.append((i, [_AS_TUPLE(f) for f in found], touched, wrote))
            # one message per chunk: the parent decodes while this process lints on
            data = marshal.dumps(results)
            view = memoryview(_SIZE.pack(len(data)) + data)
            while view:
                view = view[os.write(w, view) :]
    except BaseException:  # pragma: no cover
        code = 1
    finally:  # pragma: no cover
        os._exit(code)


class _Inbox:
    """What worker ``n`` sends: one length-prefixed marshal per chunk, decoded as it
    comes (between the parent's own chunks) and at the end; a message cut short (a
    worker that died) or unreadable ends what is taken from that worker."""

    def __init__(self, n: int, pid: int, fd: int, into: dict[int, _Result]) -> None:
        self.n, self.pid, self.fd, self.into = n, pid, fd, into
        self.buf = bytearray()
        self.bad = False
        os.set_blocking(fd, False)

    def drain(self, to_end: bool) -> None:
        """Take what has arrived; with ``to_end``, wait for the worker to finish."""
        if self.fd < 0:
            return
        if to_end:
            os.set_blocking(self.fd, True)
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                os.close(self.fd)
                self.fd = -1
                _reap(self.pid)
                self.pid = 0
                break
            self.buf += chunk
        self._decode()

    def _decode(self) -> None:
        import marshal

        while not self.bad and len(self.buf) >= _SIZE.size:
            (size,) = _SIZE.unpack_from(self.buf, 0)
            end = _SIZE.size + size
            if len(self.buf) < end:
                return
            try:
                results: Any = marshal.loads(bytes(self.buf[_SIZE.size : end]))
                got = {
                    i: _Result(self.n, [Finding(*f) for f in found], touched, wrote)
                    for i, found, touched, wrote in results
                }
            except Exception:
                self.bad = True
                return
            del self.buf[:end]
            self.into.update(got)


def _run_parent(
    linter: Linter, load: Load, plan: _Plan, shared: _Counters, workers: list[tuple[int, int]]
) -> list[Finding]:
    out: list[Finding] = []
    first_written: set[str] = set()
    for i in range(plan.first):  # exact: no file comes before these
        found, _, wrote = _lint_tracked(linter, *load(i))
        out.extend(found)
        first_written |= wrote
    at_first = linter.cx.save_state()
    results: dict[int, _Result] = {}
    inboxes = [_Inbox(n, pid, fd, results) for n, (pid, fd) in enumerate(workers)]
    workers[:] = []  # the inboxes close and reap them from here on
    try:
        while (c := shared.take(front=False)) is not None:
            linter.cx.restore_state(at_first)
            for i in plan.files(c):
                try:
                    found, touched, wrote = _lint_tracked(linter, *load(i))
                except Exception:  # met again in file order by _merge
                    break
                results[i] = _Result(-1 - c, found, touched, wrote)
            for box in inboxes:
                box.drain(to_end=False)
        for box in inboxes:
            box.drain(to_end=True)
    finally:
        for box in inboxes:
            _close(box.fd)
            _reap(box.pid, kill=True)
    linter.cx.restore_state(at_first)
    return out + _merge(linter, load, plan, results, first_written, len(inboxes))


def _merge(
    linter: Linter,
    load: Load,
    plan: _Plan,
    results: dict[int, _Result],
    first_written: set[str],
    n_workers: int,
) -> list[Finding]:
    """Files ``plan.first ..`` in order: each result stands when its stream's state lacked
    no table the file touched; else the file is linted again from the true state."""
    out: list[Finding] = []
    # the first file from plan.first on that truly wrote each table: a parent chunk
    # starting at file s lacks exactly the tables written by files before s
    first_write: dict[str, int] = {}
    # per worker: the tables its state lacks (its slice starts at file 0's state)
    lacks = [set(first_written) for _ in range(n_workers)]
    broken: set[int] = set()  # streams whose state went wrong: nothing more from them
    unreplayed: list[int] = []
    for i in range(plan.first, plan.count):
        res = results.get(i)
        ok = False
        if res is not None and res.stream not in broken:
            if res.stream >= 0:
                ok = res.touched.isdisjoint(lacks[res.stream])
            else:
                start = plan.first + (-1 - res.stream) * plan.chunk
                ok = all(first_write.get(t, i) >= start for t in res.touched)
        if res is not None and ok:
            out.extend(res.found)
            wrote = res.written
            unreplayed.append(i)
        else:
            if res is not None:
                broken.add(res.stream)
            for j in unreplayed:  # bring the true state up to file i
                linter.replay_text(*load(j))
            unreplayed.clear()
            found, _, wrote = _lint_tracked(linter, *load(i))
            out.extend(found)
        for t in wrote:
            first_write.setdefault(t, i)
        for n in range(n_workers):
            if not (ok and res is not None and res.stream == n):
                lacks[n] |= wrote
    return out


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:  # pragma: no cover
            pass


def _reap(pid: int, kill: bool = False) -> None:
    if pid <= 0:
        return
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # pragma: no cover
        pass
