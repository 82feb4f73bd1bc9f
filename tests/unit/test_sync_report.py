"""The sync report (Markdown and JSON), the result's outcome, and the progress-event channel."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from pgferry.cli.progress import SyncBars
from pgferry.errors import BadInput
from pgferry.sync import report
from pgferry.sync.events import (
    BatchWritten,
    Channel,
    Collector,
    Queued,
    TableFinished,
    TableStarted,
    Warning,
    sse,
)
from pgferry.sync.result import DeadLetter, SyncResult

T0 = datetime(2026, 11, 22, 1, 0, 0, tzinfo=UTC)


def sample() -> SyncResult:
    r = SyncResult(
        "dev",
        "prod",
        source_display="postgresql://app:s3cret@db.dev/app",
        target_display="postgresql://app:***@db.prod/app",
        mode="incremental",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=3.5),
    )
    a = r.table("public.legal_cases")
    a.strategy, a.status, a.inserted, a.updated, a.unchanged = "checksum", "ok", 2025, 3, 10
    a.checksum_source = a.checksum_target = "9f8e7d6c5b4a39281706"
    a.duration_s = 1.25
    a.masked = {"client_email": "email"}
    b = r.table("public.leads")
    b.strategy, b.status, b.inserted, b.dead_lettered = "watermark", "dead_letters", 7, 1
    b.dead_letters = [DeadLetter({"id": 42}, 'new row violates check constraint "x|y"')]
    b.warnings = ["target table has user triggers: touch_updated_at"]
    return r


def test_outcome_and_exit_code_follow_the_tables() -> None:
    r = sample()
    assert (r.derive_outcome(), r.exit_code) == ("problem", 1)
    r.table("public.leads").dead_lettered = 0
    r.table("public.leads").status = "ok"
    assert (r.derive_outcome(), r.exit_code) == ("ok", 0)
    r.table("public.x").status = "failed"
    assert r.exit_code == 3
    r.outcome = "refused"
    assert r.exit_code == 4
    assert SyncResult("a", "b", dry_run=True).to_dict()["outcome"] == "planned"
    v = SyncResult("a", "b", mode="verify")
    v.table("public.t").only_in_source = 5
    assert v.exit_code == 1


def test_json_has_per_table_counts_and_no_password() -> None:
    d = report.as_json(sample())
    text = json.dumps(d)
    assert "s3cret" not in text
    assert d["source"] == {"env": "dev", "dsn": "postgresql://app:***@db.dev/app"}
    assert d["outcome"] == "problem" and d["exit_code"] == 1 and d["ok"] is False
    assert d["totals"]["inserted"] == 2032 and d["totals"]["dead_lettered"] == 1
    lc = d["tables"][0]
    assert (lc["table"], lc["inserted"], lc["updated"], lc["unchanged"], lc["written"]) == (
        "public.legal_cases",
        2025,
        3,
        10,
        2028,
    )
    assert lc["checksums_match"] is True
    assert d["duration_s"] == 3.5
    assert d["started_at"] == "2026-11-22T01:00:00+00:00"


def test_markdown_report() -> None:
    md = report.markdown(sample())
    assert "s3cret" not in md
    assert md.startswith("# pgferry sync: dev → prod\n")
    assert "- **outcome**: done, with problems (see below) (exit 1)" in md
    assert (
        "| public.legal_cases | checksum | ok | 2,025 | 3 | 0 | 10 | 0 | "
        "`9f8e7d6c5b4a` = source | 1.25 s |"
    ) in md
    assert "| **total** |  |  | 2,032 | 3 | 0 | 10 | 1 |  | 3.50 s |" in md
    # the pipe inside the error does not break the table
    assert '| public.leads | id=42 | new row violates check constraint "x\\|y" |' in md
    assert "## Masked columns" in md and "| public.legal_cases | client_email | email |" in md
    assert "- public.leads: target table has user triggers: touch_updated_at" in md
    ok = sample()
    ok.tables = ok.tables[:1]
    # "matches" only where the check after the sync ran (a check that could have failed)
    assert "not compared again after the sync: public.legal_cases" in report.markdown(ok)
    ok.tables[0].checked_after = True
    assert (
        "- **outcome**: ok — the target matches the source, masked columns as masked (exit 0)"
    ) in report.markdown(ok)


def test_markdown_verify_report() -> None:
    r = SyncResult("dev", "prod", mode="verify", started_at=T0, finished_at=T0)
    t = r.table("public.legal_cases")
    t.status, t.only_in_source = "differs", 2025
    t.first_differing_keys = [
        {"kind": "only_in_source", "key": {"id": 1}},
        {"kind": "differing", "key": {"tenant": "a", "id": 2}},
        3,
    ]
    md = report.markdown(r)
    assert md.startswith("# pgferry verify: dev → prod")
    assert "| public.legal_cases | differs | 0 | 0 | 2,025 | 0 | 0.00 s |" in md
    assert "| public.legal_cases | id=1 (only in source); tenant=a, id=2 (differing); 3 |" in md


def test_write_is_atomic_and_checked_early(tmp_path: Path) -> None:
    p = report.write(tmp_path / "r.md", sample())
    assert p.read_text(encoding="utf-8") == report.markdown(sample())
    assert [f.name for f in tmp_path.iterdir()] == ["r.md"]  # no temp file left behind
    report.check_writable(tmp_path / "new.md")
    with pytest.raises(BadInput, match="does not exist or is not writable"):
        report.check_writable(tmp_path / "nope" / "r.md")
    with pytest.raises(BadInput, match="is a directory"):
        report.check_writable(tmp_path)


def test_channel_is_thread_safe_and_survives_a_broken_subscriber() -> None:
    ch = Channel()
    got = Collector()
    ch.subscribe(got)

    def broken(event: object) -> None:
        raise RuntimeError("boom")

    ch.subscribe(broken)

    def publish_many() -> None:
        for _ in range(500):
            ch.publish(BatchWritten("public.t", 1))

    workers = [threading.Thread(target=publish_many) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(got.of(BatchWritten)) == 2000
    assert ch.errors == ["broken: boom"]
    d = got.events[0].to_dict()
    assert d["type"] == "batch_written" and d["rows"] == 1 and isinstance(d["at"], float)
    json.dumps(d)
    unsubscribe = ch.subscribe(Collector())
    unsubscribe()


def test_rich_progress_renders_rows_rate_and_status() -> None:
    buf = io.StringIO()
    ch = Channel()
    with SyncBars(Console(file=buf, width=120, force_terminal=False)) as bars:
        ch.subscribe(bars)
        ch.publish(TableStarted("public.legal_cases", "checksum", 2000))
        for _ in range(5):
            ch.publish(BatchWritten("public.legal_cases", 405))
        ch.publish(Warning("has user triggers", table="public.legal_cases"))
        ch.publish(TableFinished("public.legal_cases", inserted=2025, duration_s=0.5))
        ch.publish(TableStarted("public.empty", "checksum", 0))
        ch.publish(TableFinished("public.empty"))
    out = buf.getvalue()
    assert "warning: public.legal_cases: has user triggers" in out
    line = next(x for x in out.splitlines() if x.startswith("public.legal_cases"))
    assert "2,025 rows" in line and "4,050 rows/s" in line and line.rstrip().endswith("ok")
    empty = next(x for x in out.splitlines() if x.startswith("public.empty"))
    assert "0 rows" in empty and "- rows/s" in empty


def test_queued_subscriber_and_sse_for_the_admin_stream() -> None:
    ch, q = Channel(), Queued(maxsize=3)
    ch.subscribe(q)
    for i in range(5):
        ch.publish(BatchWritten("public.t", i + 1))
    assert q.dropped == 2
    got = [q.get(timeout=0.1) for _ in range(3)]
    assert [g["rows"] for g in got if g] == [3, 4, 5]
    assert q.get(timeout=0.01) is None
    msg = sse(Warning("has triggers", table="public.t", at=1.5))
    head, data, end = msg.split("\n", 2)
    assert (head, end) == ("event: warning", "\n")  # one event, one data line, a blank line
    assert data.startswith("data: ") and json.loads(data.removeprefix("data: ")) == {
        "type": "warning",
        "at": 1.5,
        "message": "has triggers",
        "table": "public.t",
    }
