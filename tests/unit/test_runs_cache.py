"""The kept answers of ``GET /api/runs`` (:class:`pgferry.server.runs_cache.AnswerCache`):
served only at the version they were made at and only for their own key (the role is in
it); one making per key and version however many ask at once; a failed making not kept;
the least recently used key dropped first. And which queries the short way past FastAPI's
routing (:mod:`pgferry.server.fastpath`) answers itself: only those it reads exactly as
the route would."""

from __future__ import annotations

import asyncio

import pytest

from pgferry.server.fastpath import HEALTH, PARAMS, _query
from pgferry.server.runs_cache import AnswerCache


class Maker:
    """Makes ``<label>@<n>`` answers, counting how often it was asked."""

    def __init__(self) -> None:
        self.made = 0
        self.gate = asyncio.Event()
        self.gate.set()

    def __call__(self, label: str) -> asyncio.Future[bytes]:
        async def make() -> bytes:
            await self.gate.wait()
            self.made += 1
            return f"{label}@{self.made}".encode()

        return asyncio.ensure_future(make())


def test_kept_only_at_its_version_and_for_its_own_key() -> None:
    async def go() -> None:
        cache, m = AnswerCache(), Maker()
        viewer = ("viewer", None, None, None, 50)
        admin = ("admin", None, None, None, 50)
        assert await cache.answer(viewer, "e:1", lambda: m("viewer")) == b"viewer@1"
        assert await cache.answer(viewer, "e:1", lambda: m("viewer")) == b"viewer@1"
        # another role never gets the viewer's answer, even at the same version
        assert await cache.answer(admin, "e:1", lambda: m("admin")) == b"admin@2"
        # a new version: made again
        assert await cache.answer(viewer, "e:2", lambda: m("viewer")) == b"viewer@3"
        assert await cache.answer(admin, "e:2", lambda: m("admin")) == b"admin@4"
        assert m.made == 4

    asyncio.run(go())


def test_one_making_per_key_and_version_however_many_ask() -> None:
    async def go() -> None:
        cache, m = AnswerCache(), Maker()
        m.gate.clear()
        key = ("viewer", None, None, None, 50)
        asks = [asyncio.ensure_future(cache.answer(key, "e:1", lambda: m("x"))) for _ in range(50)]
        await asyncio.sleep(0)
        asks[0].cancel()  # one caller going away does not cancel the others' answer
        m.gate.set()
        done = await asyncio.gather(*asks[1:])
        assert set(done) == {b"x@1"} and m.made == 1

    asyncio.run(go())


def test_a_failed_making_is_not_kept_and_old_keys_go_first() -> None:
    async def go() -> None:
        cache, m = AnswerCache(size=2), Maker()

        async def fail() -> bytes:
            raise RuntimeError("the control database does not answer")

        with pytest.raises(RuntimeError):
            await cache.answer("a", "e:1", fail)
        assert len(cache) == 0
        assert await cache.answer("a", "e:1", lambda: m("a")) == b"a@1"
        assert await cache.answer("b", "e:1", lambda: m("b")) == b"b@2"
        assert await cache.answer("a", "e:1", lambda: m("a")) == b"a@1"  # a: used last
        assert await cache.answer("c", "e:1", lambda: m("c")) == b"c@3"  # b dropped
        assert len(cache) == 2
        assert await cache.answer("b", "e:1", lambda: m("b")) == b"b@4"
        assert await cache.answer("c", "e:1", lambda: m("c")) == b"c@3"

    asyncio.run(go())


@pytest.mark.parametrize(
    ("raw", "read"),
    [
        (b"", {}),
        (b"limit=5&state=failed", {"limit": "5", "state": "failed"}),
        (b"env=&kind=sync", {"env": "", "kind": "sync"}),
        (b"env=d%C3%A9v", {"env": "dév"}),  # as Starlette reads it: escapes are UTF-8
        (b"limit=500", {"limit": "500"}),
    ],
)
def test_the_short_way_reads_a_plain_query_as_the_route_does(
    raw: bytes, read: dict[str, str]
) -> None:
    assert _query(raw) == read


@pytest.mark.parametrize(
    "raw",
    [
        b"limit=0",
        b"limit=501",
        b"limit=x",
        b"limit=%2B5",
        b"limit=%EF%BC%95",
        b"state=a&state=b",
        b"page=2",
        b"limit=5&before=x",
    ],
)
def test_the_short_way_leaves_to_the_route_what_it_must_judge(raw: bytes) -> None:
    assert _query(raw) is None


def test_the_short_way_reads_production_healths_one_parameter() -> None:
    assert _query(b"", PARAMS[HEALTH]) == {}
    assert _query(b"env=prod", PARAMS[HEALTH]) == {"env": "prod"}
    assert _query(b"env=prod&env=dev", PARAMS[HEALTH]) is None
    assert _query(b"limit=5", PARAMS[HEALTH]) is None
