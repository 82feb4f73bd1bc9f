"""A verify of integer or uuid keys whose whole sums differ reads the table packed.

Invariant: for any differences (changed, deleted or inserted rows on either side, a
dense stretch or none at all), a packed verify gives exactly what the chunk sums and
signatures give: the counts and both table checksums; its first differing keys are as many
(``key_limit``, or every difference when fewer), each a real difference of its kind (the
two paths settle ranges in another order, so which ones come first may differ). And it
reads that way: after the whole sums, one packed read a side of
each piece, no chunk sums, no signatures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgferry.sync import checksum, packed
from pgferry.sync.verify import TableDiff, diff_table
from tests.helpers.sync import KINDS, Spec, fill

#: (side, statement): one change; g runs over 1..6000 (tests.helpers.sync.fill)
CHANGES = st.sampled_from(
    [
        "UPDATE k SET v = v || '!' WHERE g % {m} = 1",
        "DELETE FROM k WHERE g % {m} = 2",
        "UPDATE k SET n = NULL WHERE g % {m} = 3",
        "UPDATE k SET v = NULL WHERE g BETWEEN 2000 AND 2000 + {m} * 20",
    ]
)


@pytest.fixture(scope="module")
def dbs(make_db_module: Callable[..., str]) -> dict[str, tuple[str, str]]:
    """A source and a target per packable key kind, filled alike."""
    out = {}
    for kind in ("bigint", "uuid"):
        ddl, _, key, _ = KINDS[kind]
        pair = (make_db_module(f"vp{kind}s"), make_db_module(f"vp{kind}t"))
        for dsn in pair:
            with psycopg.connect(dsn) as c:
                c.execute(ddl)
                fill(c, key)
        out[kind] = pair
    return out


def _spy(name: str, real: Callable[..., Any], seen: list[str]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kw: Any) -> Any:
        seen.append(name)
        return real(*args, **kw)

    return wrapped


def _summary(d: TableDiff) -> tuple[Any, ...]:
    return (
        d.matched,
        d.differing,
        d.only_in_source,
        d.only_in_target,
        d.source_rows,
        d.target_rows,
        d.source_checksum,
        d.target_checksum,
        len(d.first_keys),
    )


@settings(max_examples=16, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from(["bigint", "uuid"]),
    changes=st.lists(
        st.tuples(st.sampled_from(["src", "tgt"]), CHANGES, st.integers(3, 400)), max_size=4
    ),
    new_rows=st.integers(0, 30),
    chunk_rows=st.sampled_from([20, 50, 300, 20_000]),
)
def test_packed_verify_gives_what_chunk_sums_give(
    dbs: dict[str, tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    changes: list[tuple[str, str, int]],
    new_rows: int,
    chunk_rows: int,
) -> None:
    src_dsn, tgt_dsn = dbs[kind]
    _, key_cols, _, new_key = KINDS[kind]
    spec = Spec("k", key_cols, [*key_cols, "g", "v", "n"])
    with psycopg.connect(src_dsn) as src, psycopg.connect(tgt_dsn) as tgt:
        # the changes live in these transactions only (rolled back at the end)
        conns = {"src": src, "tgt": tgt}
        for side, stmt, m in changes:
            conns[side].execute(stmt.format(m=m))
        if new_rows:
            tgt.execute(
                f"INSERT INTO k SELECT {new_key}, g, 'new', 1 FROM generate_series(1, %s) g",  # noqa: S608
                [new_rows],
            )
        reads: list[str] = []
        calls: list[str] = []
        monkeypatch.setattr(packed, "read", _spy("read", packed.read, reads))
        for name in ("bucket_sums", "signatures", "signature_stream"):
            monkeypatch.setattr(checksum, name, _spy(name, getattr(checksum, name), calls))
        by_pack = diff_table(src, tgt, spec, chunk_rows=chunk_rows, key_limit=7)
        assert calls == []
        assert bool(reads) == (not by_pack.identical)
        reads.clear()
        by_sums = diff_table(src, tgt, spec, chunk_rows=chunk_rows, key_limit=7, pack=False)
        assert reads == []
        assert _summary(by_pack) == _summary(by_sums)
        every = diff_table(src, tgt, spec, chunk_rows=chunk_rows, key_limit=10**6, pack=False)
        listed = [(k.kind, k.key) for k in by_pack.first_keys]
        assert len(set(listed)) == len(listed)
        assert set(listed) <= {(k.kind, k.key) for k in every.first_keys}
        src.rollback()
        tgt.rollback()
