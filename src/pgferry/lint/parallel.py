"""Linting many files on several cores: fork after the imports, merge in file order.

Contract:
- :func:`lint_many` returns exactly what ``linter.lint_files(load(i) for i in
  range(count))`` returns, the same findings in the same order, and raises the
  same first error (unreadable file, unparsable SQL). ``load(i)`` gives file
  *i* as (path, text) and may raise :class:`~pgferry.errors.PgferryError`.
- How: the files are cut into ``jobs`` consecutive slices. The parent lints the
  first, one forked child each of the others, every one starting from the
  linter's state at the fork. The state that carries from file to file
  (tables created, column types, NOT NULL checks) is keyed by table, and each
  file's reads and writes of it are recorded
  (:attr:`~pgferry.lint.model.Context.touched`). A child's file that touched no
  table written by any file before its slice saw exactly what a serial run
  would have shown it, so its findings stand. From a child's first file that
  fails this test (or its first error, or a child that died), the parent takes
  over: it replays what the accepted files changed (parse and effects, no
  rules) and lints the rest of that slice itself. Correctness never depends
  on the split; only speed does.
- Serial (plain :meth:`~pgferry.lint.engine.Linter.lint_files`) without
  ``os.fork``, with one job, or for fewer than :data:`MIN_FILES` files.
- Children talk to the parent only through a pipe (one pickle) and leave with
  ``os._exit``: no output, no atexit handlers, no flushing of inherited buffers.
  The linter must not be reused after a parallel run (its state then is only
  what the parent itself walked).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import fields
from operator import attrgetter
from typing import Any

from pgferry.errors import PgferryError
from pgferry.lint.engine import Linter
from pgferry.lint.model import Finding

#: below this many files a fork costs more than it saves
MIN_FILES = 64

Load = Callable[[int], tuple[str, str]]
#: one file's outcome: its findings, the tables it touched, the tables it wrote
FileResult = tuple[list[Finding], set[str], set[str]]
#: a Finding as a plain tuple of its fields: a third of the pickling cost of the object
_AS_TUPLE = attrgetter(*(f.name for f in fields(Finding)))


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
    import pickle  # noqa: F401

    from pgferry.lint.pgparse import parser

    parser()
    bounds = _slices(count, jobs)
    children: list[tuple[int, int, int, int]] = []  # (pid, read fd, start, end)
    try:
        for start, end in bounds[1:]:
            children.append((*_fork(linter, load, start, end), start, end))
        return _merge(linter, load, bounds[0], children)
    finally:
        for pid, fd, _, _ in children:
            _close(fd)
            _reap(pid, kill=True)


def _slices(count: int, jobs: int) -> list[tuple[int, int]]:
    # the parent's slice is a little larger: children also pickle what they found,
    # and the parent reads their results only once its own slice is done
    first = round(count / jobs * 1.06)
    rest = count - first
    out = [(0, first)]
    for j in range(jobs - 1):
        out.append((first + rest * j // (jobs - 1), first + rest * (j + 1) // (jobs - 1)))
    return out


def _lint_tracked(linter: Linter, path: str, text: str) -> FileResult:
    cx = linter.cx
    cx.touched, cx.written = set(), set()
    try:
        found = linter.lint_text(path, text)
        return found, cx.touched, cx.written
    finally:
        cx.touched = cx.written = None


def _fork(linter: Linter, load: Load, start: int, end: int) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        return pid, r
    code = 0  # pragma: no cover - runs in the child (coverage does not follow forks)
    try:  # pragma: no cover
        os.close(r)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        results: list[tuple[list[tuple[Any, ...]], set[str], set[str]]] = []
        stop: str | None = None
        for i in range(start, end):
            try:
                found, touched, wrote = _lint_tracked(linter, *load(i))
                results.append(([_AS_TUPLE(f) for f in found], touched, wrote))
            except PgferryError:
                stop = "error"
                break
            except Exception:
                stop = "crash"
                break
        import pickle

        data = pickle.dumps((results, stop), protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(data)
        while view:
            view = view[os.write(w, view):]
    except BaseException:  # pragma: no cover
        code = 1
    finally:  # pragma: no cover
        os._exit(code)


def _receive(pid: int, fd: int) -> tuple[list[FileResult], str | None] | None:
    """A child's (results, stop); None when it died or sent something unreadable."""
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
        _reap(pid)
    import pickle

    try:
        payload: Any = pickle.loads(b"".join(chunks))
        results, stop = payload
        return [([Finding(*f) for f in found], touched, wrote)
                for found, touched, wrote in results], stop
    except Exception:
        return None


def _merge(linter: Linter, load: Load, first: tuple[int, int],
           children: list[tuple[int, int, int, int]]) -> list[Finding]:
    out: list[Finding] = []
    written: set[str] = set()  # every table written by the files merged so far
    unreplayed: list[int] = []  # accepted child files whose changes the parent has not walked

    def own(i: int) -> None:
        found, _, wrote = _lint_tracked(linter, *load(i))
        out.extend(found)
        written.update(wrote)

    for i in range(*first):
        own(i)
    for n, (pid, fd, start, end) in enumerate(children):
        children[n] = (0, -1, start, end)  # _receive closes and reaps
        got = _receive(pid, fd)
        results, stop = got if got is not None else ([], "crash")
        k = start
        for found, touched, wrote in results:
            if not touched.isdisjoint(written):
                break
            out.extend(found)
            written.update(wrote)
            unreplayed.append(k)
            k += 1
        if k == end:
            continue
        for i in unreplayed:  # bring the parent's state up to file k, then go on alone
            linter.replay_text(*load(i))
        unreplayed.clear()
        for i in range(k, end):
            own(i)
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
