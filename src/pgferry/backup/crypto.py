"""Encryption at rest for backup files: AES-256-GCM in 1 MiB chunks, streamed.

Contract: :meth:`Key.new` derives a backup's key from ``$PGFERRY_BACKUP_KEY``
(scrypt, a fresh salt) and :meth:`Key.open` derives it again from the
parameters a manifest keeps (``"encryption"``), raising
:class:`~pgferry.errors.BadInput` (exit 2) in one sentence when the variable
is missing or holds another key (an HMAC check value, never the key, is kept).
:func:`encrypt_file` and :func:`decrypt_file` stream a file chunk by chunk,
never the whole dump in memory.

File layout: ``MAGIC`` + a 16-byte random salt (the file's own key is
HKDF(backup key, salt)), then chunks of at most :data:`CHUNK` bytes, each
sealed with AES-GCM under the nonce (chunk number, last-chunk flag) and the
file's path in the backup as associated data: a changed, reordered,
truncated, extended or renamed file does not decrypt (STREAM construction).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from pgferry.errors import BadInput, ProblemFound

ENV_VAR = "PGFERRY_BACKUP_KEY"
SCHEME = "aes-256-gcm-stream-v1"
MAGIC = b"PGFENC1\x00"
CHUNK = 1 << 20
TAG = 16
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}


@dataclass(frozen=True)
class Key:
    secret: bytes
    params: dict[str, Any]  # what the manifest keeps: scheme, kdf, salt, check

    @staticmethod
    def _passphrase() -> bytes:
        value = os.environ.get(ENV_VAR, "")
        if not value:
            raise BadInput(
                f"[backup] encrypt is on but ${ENV_VAR} is not set; export the "
                "backup key (keep a copy outside this machine)"
            )
        return value.encode()

    @staticmethod
    def _derive(passphrase: bytes, salt: bytes, p: dict[str, Any]) -> bytes:
        return Scrypt(salt=salt, length=32, n=p["n"], r=p["r"], p=p["p"]).derive(passphrase)

    @staticmethod
    def _check(secret: bytes) -> str:
        return hmac.new(secret, b"pgferry backup key check", hashlib.sha256).hexdigest()

    @classmethod
    def new(cls) -> Key:
        salt = os.urandom(16)
        secret = cls._derive(cls._passphrase(), salt, _SCRYPT)
        return cls(
            secret,
            {
                "scheme": SCHEME,
                "kdf": "scrypt",
                **_SCRYPT,
                "salt": salt.hex(),
                "check": cls._check(secret),
            },
        )

    @classmethod
    def open(cls, params: dict[str, Any], backup: str) -> Key:
        if params.get("scheme") != SCHEME:
            raise BadInput(
                f"backup {backup} is encrypted with {params.get('scheme')!r}, "
                "which this pgferry cannot read; use a newer pgferry"
            )
        secret = cls._derive(cls._passphrase(), bytes.fromhex(params["salt"]), params)
        if not hmac.compare_digest(cls._check(secret), params["check"]):
            raise BadInput(
                f"${ENV_VAR} is not the key backup {backup} was encrypted with; "
                "export the key that was set when it was taken"
            )
        return cls(secret, params)

    def file_aead(self, salt: bytes) -> AESGCM:
        sub = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=salt, info=b"pgferry backup file"
        ).derive(self.secret)
        return AESGCM(sub)


def _nonce(n: int, last: bool) -> bytes:
    return n.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _chunks(f: BinaryIO, size: int) -> Iterator[tuple[bytes, bool]]:
    """``f`` in pieces of ``size`` bytes, each with whether it is the last (maybe empty)."""
    cur = f.read(size)
    while True:
        nxt = f.read(size)
        yield cur, not nxt
        if not nxt:
            return
        cur = nxt


def encrypt_file(src: Path, dst: Path, key: Key, name: str) -> tuple[str, int]:
    """Write ``src`` encrypted to ``dst`` (fsynced); the sha256 and size of what was written."""
    salt = os.urandom(16)
    aead = key.file_aead(salt)
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        head = MAGIC + salt
        fout.write(head)
        h.update(head)
        size += len(head)
        for i, (chunk, last) in enumerate(_chunks(fin, CHUNK)):
            sealed = aead.encrypt(_nonce(i, last), chunk, name.encode())
            fout.write(sealed)
            h.update(sealed)
            size += len(sealed)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest(), size


def decrypt_file(src: Path, dst: Path, key: Key, name: str) -> None:
    """Write ``src`` decrypted to ``dst``; ProblemFound (exit 1) naming the file if it fails."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        head = fin.read(len(MAGIC) + 16)
        if len(head) < len(MAGIC) + 16 or not head.startswith(MAGIC):
            raise ProblemFound(
                f"{name} is not a pgferry-encrypted file; the backup is damaged", file=name
            )
        aead = key.file_aead(head[len(MAGIC) :])
        try:
            for i, (sealed, last) in enumerate(_chunks(fin, CHUNK + TAG)):
                fout.write(aead.decrypt(_nonce(i, last), sealed, name.encode()))
        except InvalidTag:
            raise ProblemFound(
                f"{name} does not decrypt (changed, truncated or damaged); the backup is damaged",
                file=name,
            ) from None
