"""Backup encryption: round trip, streaming chunk edges, tampering, wrong or missing key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pgferry.backup import crypto
from pgferry.errors import BadInput, ProblemFound


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> crypto.Key:
    monkeypatch.setenv(crypto.ENV_VAR, "correct horse battery staple")
    return crypto.Key.new()


@pytest.mark.parametrize("size", [0, 1, crypto.CHUNK - 1, crypto.CHUNK, 2 * crypto.CHUNK + 7])
def test_round_trip(tmp_path: Path, key: crypto.Key, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "a").write_bytes(data)
    digest, n = crypto.encrypt_file(tmp_path / "a", tmp_path / "a.enc", key, "dump/a")
    enc = (tmp_path / "a.enc").read_bytes()
    assert n == len(enc) and data[:64] not in enc[:200] or size < 64
    import hashlib

    assert hashlib.sha256(enc).hexdigest() == digest
    again = crypto.Key.open(key.params, "b1")
    crypto.decrypt_file(tmp_path / "a.enc", tmp_path / "a.out", again, "dump/a")
    assert (tmp_path / "a.out").read_bytes() == data


def test_tampering_truncation_and_renaming_fail(tmp_path: Path, key: crypto.Key) -> None:
    (tmp_path / "a").write_bytes(os.urandom(crypto.CHUNK + 100))
    crypto.encrypt_file(tmp_path / "a", tmp_path / "e", key, "dump/a")
    enc = bytearray((tmp_path / "e").read_bytes())
    bad = []
    flipped = enc.copy()
    flipped[-5] ^= 1
    bad.append((bytes(flipped), "dump/a"))
    bad.append((bytes(enc[: len(crypto.MAGIC) + 16 + crypto.CHUNK + crypto.TAG]), "dump/a"))
    bad.append((bytes(enc), "dump/b"))  # another file's name
    for data, name in bad:
        (tmp_path / "x").write_bytes(data)
        with pytest.raises(ProblemFound, match="does not decrypt"):
            crypto.decrypt_file(tmp_path / "x", tmp_path / "y", key, name)


def test_wrong_or_missing_key_is_exit_2(key: crypto.Key, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(crypto.ENV_VAR, "another key")
    with pytest.raises(BadInput, match="is not the key backup b1 was encrypted with") as e:
        crypto.Key.open(key.params, "b1")
    assert e.value.exit_code == 2
    monkeypatch.delenv(crypto.ENV_VAR)
    with pytest.raises(BadInput, match="PGFERRY_BACKUP_KEY is not set"):
        crypto.Key.open(key.params, "b1")
