"""The pure parts of issue 17: phase headers, backfill placeholders, pacing, gate firing,
recipes' grammar, percentiles, TAP output."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgferry.backfill import throttle
from pgferry.backfill.files import rewrite
from pgferry.config import GateConfig
from pgferry.errors import BadInput
from pgferry.gates.evaluate import Evaluator
from pgferry.migrate.bench import percentiles
from pgferry.migrate.phases import declares_contract, parse_header
from pgferry.migrate.recipes import parse
from pgferry.migrate.testing import tap_failures


def test_header_with_every_guard() -> None:
    h = parse_header(
        """-- a comment
-- pgferry:phase contract
-- pgferry:after backfill copy_email
-- pgferry:require SELECT id FROM users WHERE new IS NULL;
-- pgferry:require-no-clients application_name LIKE 'app-v1%'
-- pgferry:wait 24h
-- pgferry:ignore ban-drop-column -- the linter's, left alone

ALTER TABLE users DROP COLUMN email;
-- pgferry:ignore-file ban-drop-column -- also the linter's, anywhere
""",
        "V9__x.sql",
    )
    assert h.contract and h.phase_line == 2
    assert [(g.kind, g.arg, g.line) for g in h.guards] == [
        ("after_backfill", "copy_email", 3),
        ("require", "SELECT id FROM users WHERE new IS NULL", 4),
        ("require_no_clients", "application_name LIKE 'app-v1%'", 5),
        ("wait", "24h", 6),
    ]
    assert h.guards[3].seconds == 86400
    assert h.backfills() == ["copy_email"]


def test_no_header_is_an_ordinary_file() -> None:
    assert parse_header("CREATE TABLE t (id int);\n", "V1__t.sql").phase is None
    assert not declares_contract("-- -- pgferry:phase contract (commented out)\nSELECT 1;\n")
    assert declares_contract("--pgferry:phase contract\nSELECT 1;\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "-- pgferry:phase expand\n-- pgferry:wait 1h\nSELECT 1;",
            "V1__x.sql:2: pgferry:wait guards a contract file",
        ),
        (
            "-- pgferry:phase expand\n-- pgferry:phase contract\n",
            "a second pgferry:phase (the first is on line 1)",
        ),
        (
            "-- pgferry:phase contract\n-- pgferry:after copy\n",
            "write `-- pgferry:after backfill NAME`",
        ),
        ("-- pgferry:phase contract\n-- pgferry:require\n", "pgferry:require needs a query"),
        ("-- pgferry:phase contract\n-- pgferry:wait 0h\n", "pgferry:wait needs a duration"),
    ],
)
def test_bad_headers(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_header(text, "V1__x.sql")


def test_placeholders_only_where_they_are_sql() -> None:
    text = (
        "UPDATE t SET a = ':lo', b = x::lo, c = $$ :hi $$ -- :hi\n"
        "WHERE id BETWEEN :lo AND :hi AND d LIKE 'a%' /* :lo */"
    )
    out = rewrite(text, {":lo": "%(lo)s", ":hi": "%(hi)s"}, escape_percent=True)
    assert out == (
        "UPDATE t SET a = ':lo', b = x::lo, c = $$ :hi $$ -- :hi\n"
        "WHERE id BETWEEN %(lo)s AND %(hi)s AND d LIKE 'a%%' /* :lo */"
    )
    assert (
        rewrite("id BETWEEN $1 AND $2 AND e = $tag$ $1 $tag$", {"$1": "A", "$2": "B"})
        == "id BETWEEN A AND B AND e = $tag$ $1 $tag$"
    )


@given(size=st.integers(1, 10**7), elapsed=st.floats(0, 100), target=st.floats(0.001, 10))
def test_next_size_moves_toward_the_target_at_most_twofold(
    size: int, elapsed: float, target: float
) -> None:
    n = throttle.next_size(size, elapsed, target, 100, 1_000_000)
    assert 100 <= n <= 1_000_000
    bounded = max(100, min(size, 1_000_000))
    if 100 <= size <= 1_000_000:
        assert n <= max(2 * size, 100) and n >= min(size // 2, bounded)
    if elapsed > target * 1.01 and size > 200:
        assert n <= size
    if elapsed < target * 0.99 and size < 500_000:
        assert n >= size


def test_pause_reasons() -> None:
    s = throttle.Signals
    base = s(5, 0, None)
    assert throttle.pause_reason(base, base, s(5, 0, 0.5), 10) is None
    assert (
        throttle.pause_reason(base, base, s(6, 0, None), 10)
        == "1 deadlock in the database since the last batch"
    )
    assert "2 session(s) waiting for locks" in str(
        throttle.pause_reason(base, base, s(5, 2, None), 10)
    )
    assert "replication lag 12.0s" in str(throttle.pause_reason(base, base, s(5, 0, 12), 10))


def _gate(**kw: object) -> GateConfig:
    return GateConfig.model_validate(
        {"name": "g", "sql": "SELECT 1", "threshold": 0.5, "action": "rollback", **kw}
    )


def test_a_gate_fires_after_its_duration_of_breach() -> None:
    g = _gate(**{"for": "10s"})
    e = Evaluator()
    assert e.observe(g, 0.9, 0) is None
    assert e.observe(g, 0.9, 9.9) is None
    assert e.observe(g, None, 10) is None  # unknown neither fires nor clears
    f = e.observe(g, 0.9, 10)
    assert f is not None and f.breached_for == 10 and f.action == "rollback"
    assert e.observe(g, 0.1, 11) is None and not e.breaching(g)
    assert e.observe(g, 0.9, 12) is None  # the clock starts again


def test_a_delta_gate_fires_when_the_counter_rises() -> None:
    g = _gate(delta=True, threshold=0, action="pause")
    e = Evaluator()
    assert e.observe(g, 40, 0) is None  # the first reading is the base
    assert e.observe(g, 40, 1) is None
    f = e.observe(g, 42, 2)
    assert f is not None and f.value == 2
    assert "increase 2 > 0 (action pause)" in f.describe()


def test_presets() -> None:
    lat = GateConfig.model_validate({"name": "l", "preset": "latency", "slo": "300ms"})
    assert (lat.threshold, str(lat.for_), lat.action) == (0.6, "10min", "rollback")
    err = GateConfig.model_validate({"name": "e", "preset": "errors", "action": "abort"})
    assert (err.threshold, err.action, str(err.for_)) == (0.02, "abort", "5min")
    with pytest.raises(ValueError, match="needs slo"):
        GateConfig.model_validate({"name": "l", "preset": "latency"})
    with pytest.raises(ValueError, match="exactly one of promql and sql"):
        GateConfig.model_validate({"name": "x", "threshold": 1, "action": "pause"})


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "rename users.email to email_address",
            ("rename", None, "users", "email", "email_address"),
        ),
        (
            "Rename column email to email_address on app.users",
            ("rename", "app", "users", "email", "email_address"),
        ),
        (
            "change type of orders.amount to numeric(12, 2)",
            ("change_type", None, "orders", "amount", "numeric(12, 2)"),
        ),
        ("add not null to users.note default ''", ("not_null", None, "users", "note", "")),
        (
            "split users into user_profiles (bio, avatar_url)",
            ("split", None, "users", "", "user_profiles"),
        ),
    ],
)
def test_recipe_grammar(text: str, want: tuple[object, ...]) -> None:
    s = parse(text)
    assert (s.kind, s.schema, s.table, s.column, s.new) == want
    if s.kind == "not_null":
        assert s.default == "''"
    if s.kind == "split":
        assert s.columns == ["bio", "avatar_url"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rename email to email_address", "name the table of column 'email'"),
        ("add not null to users.note", "say what NULLs become"),
        ("change type of t.c to not a type !", "is not a PostgreSQL type"),
        ("make it faster", "--expand-contract knows four recipes"),
    ],
)
def test_recipe_grammar_errors(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse(text)
    assert parse("rename email to email_address", table="users").table == "users"


def test_percentiles_nearest_rank() -> None:
    assert percentiles([]) == {}
    xs = [float(i) for i in range(1, 101)]
    assert percentiles(xs) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}


def test_tap_failures() -> None:
    assert tap_failures(["1..2", "ok 1 - a", "ok 2 - b"]) == []
    assert tap_failures(
        ["1..3", "ok 1", "not ok 2 - b", "# Looks like you planned 3 tests but ran 2"]
    ) == ["not ok 2 - b", "# Looks like you planned 3 tests but ran 2"]
