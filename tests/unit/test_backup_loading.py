"""The script filter for servers older than PostgreSQL 17: settings out, rows untouched."""

from __future__ import annotations

from pgferry.backup.loading import strip_newer_settings


def test_only_the_setting_outside_the_rows_is_left_out() -> None:
    script = [
        b"SET statement_timeout = 0;\n",
        b"SET transaction_timeout = 0;\n",
        b"COPY public.notes (body) FROM stdin;\n",
        b"SET transaction_timeout = 0;\n",  # a row whose text is the same
        b"\\.\n",
        b"SELECT 1;\n",
    ]
    assert list(strip_newer_settings(script)) == [script[0], *script[2:]]
