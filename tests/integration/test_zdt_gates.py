"""Gates against a real Prometheus: `migrate up --watch` and backfills pause, stop and roll
back on the service's own metrics (issue 17). Application writes run beside every change."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.helpers import Project, Result, prom
from tests.helpers.prom import Prometheus
from tests.helpers.zdt import Load, backfill, journal, one, sql, state

V1 = """CREATE TABLE orders (id bigint PRIMARY KEY, amount int NOT NULL, note text);
INSERT INTO orders SELECT g, g % 100 FROM generate_series(1, 4000) g;
"""


def writes(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    conn.execute("UPDATE orders SET amount = amount + 1 WHERE id = %s", [rnd.randint(1, 4000)])


def _gates(p: Project, prom: Prometheus, body: str) -> None:
    text = p.config.read_text().replace("[gates]\n", f'[gates]\nprometheus_url = "{prom.url}"\n')
    p.config.write_text(text + body)


def _when(
    cond: Callable[[], bool], then: Callable[[], None], timeout: float = 60
) -> threading.Thread:
    def run() -> None:
        deadline = time.monotonic() + timeout
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.05)
        then()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


LATENCY = """
[[gate]]
name = "latency"
promql = "max(app_p95_seconds)"
threshold = 0.5
for = "1s"
action = "rollback"
"""


def test_watch_rolls_back_what_the_run_applied(
    zproj: Project, prometheus: Prometheus, cli: Callable[..., Result]
) -> None:
    p, dev = zproj, zproj.dsns["dev"]
    prometheus.exporter.set("app_p95_seconds", 0.1)
    prometheus.wait_for("app_p95_seconds", 0.1)
    _gates(p, prometheus, LATENCY)
    cfg = ("--config", str(p.config))
    p.write("V1__orders.sql", V1)
    assert cli(*cfg, "migrate", "up", "-e", "dev").code == 0
    p.write("V2__order_source.sql", "ALTER TABLE orders ADD COLUMN source text;\n")
    p.write("V3__order_channel.sql", "ALTER TABLE orders ADD COLUMN channel text;\n")
    p.write("U3__order_channel.sql", "ALTER TABLE orders DROP COLUMN channel;\n")
    with Load(dev, writes) as load:
        # a rollback gate needs an undo for every file: V2 has none, nothing runs
        r = cli(*cfg, "migrate", "up", "-e", "dev", "--watch")
        assert r.code == 2, r.err
        assert (
            "--watch with a rollback gate needs an undo file" in r.err
            and "V2__order_source.sql has none" in r.err
        )
        assert one(dev, "SELECT max(version::int) FROM flyway_schema_history") == 1
        p.write("U2__order_source.sql", "ALTER TABLE orders DROP COLUMN source;\n")

        # a quiet watch: nothing fires
        r = cli(*cfg, "migrate", "up", "-e", "dev", "--target", "2", "--watch-for", "2s")
        assert r.code == 0, r.err
        assert "watching 1 gate(s) for 2s: latency" in r.err
        assert "watch over after" in r.err and "no gate fired (latency 0.1)" in r.err

        # latency goes up once V3 is in: the watch rolls V3 back, not V2
        t = _when(
            lambda: (
                one(
                    dev,
                    "SELECT max(version::int) FROM flyway_schema_history "
                    "WHERE success AND type = 'SQL'",
                )
                == 3
            ),
            lambda: prometheus.exporter.set("app_p95_seconds", 0.9),
        )
        r = cli(*cfg, "migrate", "up", "-e", "dev", "--watch-for", "60s")
        t.join()
        assert r.code == 3, r.err
        assert "gate 'latency' fired: value 0.9 > 0.5 for" in r.err
        assert "rolled back U3__order_channel.sql; dev is at version 2" in r.err
    load.check()
    prometheus.exporter.set("app_p95_seconds", 0.1)
    assert (
        one(
            dev,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = "
            "'orders' AND column_name IN ('source', 'channel')",
        )
        == 1
    )
    watch = journal(dev, "migrate watch")
    assert [w["outcome"] for w in watch] == ["ok", "failed"]
    assert watch[-1]["details"]["gate"]["gate"] == "latency"
    undo = journal(dev, "migrate undo")[-1]
    assert undo["outcome"] == "ok"
    assert undo["arguments"]["gate"] == "latency"
    assert "fired" in undo["arguments"]["reason"]
    assert undo["details"]["applied"][0]["script"] == "U3__order_channel.sql"


def test_backfill_pauses_then_rolls_back_on_prometheus(
    zproj: Project, prometheus: Prometheus, cli: Callable[..., Result]
) -> None:
    p, dev = zproj, zproj.dsns["dev"]
    prometheus.exporter.set("app_p95_seconds", 0.1)
    prometheus.exporter.set("app_error_ratio", 0.2)  # bad from the start: the backfill waits
    prometheus.wait_for("app_error_ratio", 0.2)
    _gates(
        p,
        prometheus,
        LATENCY
        + """
[[gate]]
name = "errors"
promql = "max(app_error_ratio)"
threshold = 0.05
action = "pause"
during = ["backfill"]
""",
    )
    sql(dev, V1)
    backfill(
        p,
        "note",
        "UPDATE orders SET note = 'amount ' || amount\n"
        "WHERE id BETWEEN :lo AND :hi AND pg_sleep(0.0002) IS NOT NULL\n",
    )
    cfg = ("--config", str(p.config))
    with Load(dev, writes) as load:

        def settle() -> None:  # the error ratio recovers 1.5 s in
            time.sleep(1.5)
            prometheus.exporter.set("app_error_ratio", 0.0)

        calm = _when(lambda: True, settle)
        hot = _when(
            lambda: (state(dev, "note").get("batches") or 0) >= 4,
            lambda: prometheus.exporter.set("app_p95_seconds", 2.0),
        )
        r = cli(
            *cfg,
            "backfill",
            "run",
            "note",
            "-e",
            "dev",
            "--batch-size",
            "200",
            "--target-duration",
            "0",
        )
        calm.join()
        hot.join()
        assert r.code == 3, r.err
        assert "pausing: gate 'errors' fired: value 0.2 > 0.05 (action pause)" in r.err
        assert "resuming after" in r.err
        assert "gate 'latency' fired: value 2 > 0.5 for" in r.err
        assert "backfill note reverted in dev:" in r.err
    load.check()
    prometheus.exporter.set("app_p95_seconds", 0.1)
    assert one(dev, "SELECT count(*) FROM orders WHERE note IS NOT NULL") == 0
    last = journal(dev, "backfill run")[-1]
    assert last["details"]["gate"]["gate"] == "latency"
    assert last["details"]["pauses"] if "pauses" in last["details"] else True
    assert state(dev, "note")["status"] == "reverted"


def test_a_gate_query_prometheus_rejects_is_bad_input(
    zproj: Project, prometheus: Prometheus, cli: Callable[..., Result]
) -> None:
    p, dev = zproj, zproj.dsns["dev"]
    _gates(
        p,
        prometheus,
        """
[[gate]]
name = "typo"
promql = "max((app_p95_seconds)"
threshold = 1
action = "abort"
""",
    )
    sql(dev, V1)
    backfill(p, "note", "UPDATE orders SET note = 'x' WHERE id BETWEEN :lo AND :hi\n")
    r = cli("--config", str(p.config), "backfill", "run", "note", "-e", "dev")
    assert r.code == 2, r.err
    assert "gate 'typo': Prometheus rejected the query:" in r.err
    assert one(dev, "SELECT count(*) FROM orders WHERE note IS NOT NULL") == 0


def test_prometheus_down_pauses_then_stops(zproj: Project, cli: Callable[..., Result]) -> None:
    p, dev = zproj, zproj.dsns["dev"]
    # nothing listens on this port: the gate cannot be read, [gates] on_unknown = "pause"
    p.config.write_text(
        p.config.read_text()
        .replace("[gates]\n", '[gates]\nprometheus_url = "http://127.0.0.1:9"\ntimeout = "200ms"\n')
        .replace('max_pause = "20s"', 'max_pause = "1s"')
        + LATENCY
    )
    sql(dev, V1)
    backfill(p, "note", "UPDATE orders SET note = 'x' WHERE id BETWEEN :lo AND :hi\n")
    with Load(dev, writes) as load:
        r = cli("--config", str(p.config), "backfill", "run", "note", "-e", "dev")
    load.check()
    assert r.code == 3, r.err
    assert "gate 'latency' cannot be read: Prometheus at http://127.0.0.1:9 did not answer" in r.err
    assert "paused for more than [backfill] max_pause (1s)" in r.err


@pytest.mark.parametrize("bad", ['action = "explode"', 'op = "=="'])
def test_gate_config_errors_name_the_line(
    zproj: Project, cli: Callable[..., Result], bad: str
) -> None:
    zproj.config.write_text(
        zproj.config.read_text()
        + f"""
[[gate]]
name = "x"
sql = "SELECT 1"
threshold = 1
{bad}
"""
    )
    r = cli("--config", str(zproj.config), "migrate", "status", "-e", "dev")
    assert r.code == 2 and "pgferry.toml:" in r.err and "gate.0." in r.err, r.err


@pytest.fixture
def prometheus_auth() -> Iterator[Prometheus]:
    """A second Prometheus whose API asks for basic auth (as hosted ones do)."""
    yield from prom.start(auth=("pgferry", "s3cret-token"))


def test_a_prometheus_behind_basic_auth(
    zproj: Project, prometheus_auth: Prometheus, cli: Callable[..., Result]
) -> None:
    p, dev = zproj, zproj.dsns["dev"]
    prom_ = prometheus_auth
    prom_.exporter.set("app_p95_seconds", 0.9)
    prom_.wait_for("app_p95_seconds", 0.9)
    host = prom_.url.removeprefix("http://")
    base = p.config.read_text()
    sql(dev, V1)
    backfill(p, "note", "UPDATE orders SET note = 'x' WHERE id BETWEEN :lo AND :hi\n")
    gate = LATENCY.replace('action = "rollback"', 'action = "abort"').replace(
        'for = "1s"', 'for = "0s"'
    )

    # the user and password in the URL (the token from .env): the gate reads the value (and
    # it is bad: abort)
    (p.root / ".env").write_text("PROM_TOKEN=s3cret-token\n")
    p.config.write_text(
        base.replace(
            "[gates]\n", '[gates]\nprometheus_url = "http://pgferry:${PROM_TOKEN}@' + host + '"\n'
        )
        + gate
    )
    with Load(dev, writes) as load:
        r = cli("--config", str(p.config), "backfill", "run", "note", "-e", "dev")
    load.check()
    assert r.code == 3, r.err
    assert "gate 'latency' fired: value 0.9 > 0.5" in r.err
    assert one(dev, "SELECT count(*) FROM orders WHERE note IS NOT NULL") == 0

    # a wrong password: the gate cannot be read, and the message keeps the password out
    p.config.write_text(
        base.replace(
            "[gates]\n", f'[gates]\nprometheus_url = "http://pgferry:wrong-token@{host}"\n'
        ).replace('max_pause = "20s"', 'max_pause = "1s"')
        + gate
    )
    with Load(dev, writes) as load:
        r = cli("--config", str(p.config), "backfill", "run", "note", "-e", "dev")
    load.check()
    assert r.code == 3, r.err
    assert (
        "gate 'latency' cannot be read: Prometheus answered HTTP 401 (check the user and "
        "password in [gates] prometheus_url)" in r.err
    )
    assert "wrong-token" not in r.err + r.out
    assert "wrong-token" not in str(journal(dev, "backfill run"))
