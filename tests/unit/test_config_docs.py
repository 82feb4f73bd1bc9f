"""Every key of pgferry.toml is documented in docs/configuration.md."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from pgferry.config import Config

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def _keys(model: type[BaseModel]) -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        keys.append(field.alias or name)
        ann = field.annotation
        for arg in (*getattr(ann, "__args__", ()), ann):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                keys += _keys(arg)
    return keys


def test_every_config_key_is_documented() -> None:
    def documented(k: str) -> bool:  # a key (`k`) or a table ([k], [[k]], [x.k])
        return any(form in DOC for form in (f"`{k}`", f"[{k}", f".{k}]"))

    missing = [k for k in _keys(Config) if k != "tables_config" and not documented(k)]
    assert not missing, f"config keys missing from docs/configuration.md: {missing}"
