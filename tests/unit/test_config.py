"""Config loading: clear errors naming key and line; variables from env and .env."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pgferry.config import load_config, parse_duration
from pgferry.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pgferry.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[environments.dev]\n"))
    assert cfg.migrate.history_table == "flyway_schema_history"
    assert str(cfg.migrate.lock_timeout) == "250ms"  # as written; parsed once, a timedelta:
    assert cfg.migrate.lock_timeout == timedelta(milliseconds=250)
    assert cfg.migrate.lock_retries == 8
    assert cfg.environments["dev"].url is None
    assert cfg.sync.schemas == ["public"]


def test_unknown_key_names_key_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, '[environments.prod]\nurl = "x"\nprotectd = true\n')
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"{p}:3: environments.prod.protectd: unknown key" in str(e.value)
    assert e.value.exit_code == 2


def test_bad_duration_names_line(tmp_path: Path) -> None:
    p = write(tmp_path, '[migrate]\nlock_retries = 3\nlock_timeout = "soon"\n')
    with pytest.raises(ConfigError, match=r":3: migrate.lock_timeout: 'soon' is not a duration"):
        load_config(p)


def test_malformed_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="malformed TOML.*line 2"):
        load_config(write(tmp_path, "[environments.dev]\nurl = \n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pgferry init"):
        load_config(tmp_path / "nope.toml")


def test_variables_from_env_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, '[environments.prod]\nurl = "postgresql://u:${PW}@${HOST}/db"\n')
    (tmp_path / ".env").write_text("PW=s3cret\nHOST=fromdotenv\n")
    monkeypatch.setenv("HOST", "fromenv")
    cfg = load_config(p)
    assert cfg.resolve(cfg.environments["prod"].url or "", "environments.prod.url") == (
        "postgresql://u:s3cret@fromenv/db"
    )
    assert [v for v, _, _ in cfg.variables()] == ["PW", "HOST"]


def test_missing_variable_names_it_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, '[environments.dev]\n\n[environments.prod]\nurl = "${NOPE_URL}"\n')
    cfg = load_config(p)
    msg = r"variable NOPE_URL used by environments.prod.url \(line 4\)"
    with pytest.raises(ConfigError, match=msg):
        cfg.resolve(cfg.environments["prod"].url or "", "environments.prod.url")


def test_unknown_env(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[environments.dev]\n"))
    with pytest.raises(ConfigError, match="unknown environment 'stage' \\(configured: dev\\)"):
        cfg.env("stage")


def test_sync_tables_both_forms(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[sync]\ntables = ["public.a"]\n'))
    assert cfg.sync.tables == ["public.a"]
    cfg = load_config(write(tmp_path, '[sync.tables."public.a"]\nkey = ["id"]\n'))
    assert cfg.sync.table["public.a"].key == ["id"]


@pytest.mark.parametrize(
    ("text", "ms"), [("250ms", 250), ("5s", 5000), ("2min", 120000), ("1h", 3600000), ("100", 100)]
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text).total_seconds() * 1000 == ms


def test_backup_defaults_and_keep_policy(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[environments.dev]\n"))
    assert cfg.backup.dir == "backups"
    assert cfg.backup_dir == (tmp_path / "backups").resolve()
    k = cfg.backup.keep
    assert (k.daily, k.weekly, k.monthly, k.min_count) == (7, 4, 12, 1)
    assert cfg.backup.encrypt is False
    assert str(cfg.backup.max_age) == "26h" and cfg.backup.min_size == 0
    cfg = load_config(
        write(
            tmp_path,
            '[backup]\ndir = "/srv/b"\nmin_size = "10MB"\n'
            "[backup.keep]\ndaily = 3\nmin_count = 2\n",
        )
    )
    assert cfg.backup_dir == Path("/srv/b") and cfg.backup.min_size_bytes == 10_000_000
    assert (cfg.backup.keep.daily, cfg.backup.keep.weekly, cfg.backup.keep.min_count) == (3, 4, 2)


def test_backup_bad_values_name_the_line(tmp_path: Path) -> None:
    p = write(tmp_path, '[backup]\nmax_age = "soon"\n')
    with pytest.raises(ConfigError, match=r":2: backup.max_age: 'soon' is not a duration"):
        load_config(p)
    p = write(tmp_path, "[backup.keep]\nmin_count = 0\n")
    with pytest.raises(ConfigError, match=r":2: backup.keep.min_count"):
        load_config(p)
    p = write(tmp_path, '[backup]\nmin_size = "lots"\n')
    with pytest.raises(ConfigError, match=r":2: backup.min_size: 'lots' is not a size"):
        load_config(p)


def test_sync_maintenance_work_mem_in_postgresql_units(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[sync]\nmaintenance_work_mem = "96MB"\n'))
    assert cfg.sync.rebuild_memory == "98304kB"
    assert load_config(write(tmp_path, "[sync]\n")).sync.rebuild_memory is None
    for bad, why in (
        ("lots", "is not a memory size in PostgreSQL's units"),
        ("512", "is not a memory size in PostgreSQL's units"),
        ("512kB", "is not between 1MB and 2TB"),
        ("3TB", "is not between 1MB and 2TB"),
    ):
        p = write(tmp_path, f'[sync]\njobs = 2\nmaintenance_work_mem = "{bad}"\n')
        with pytest.raises(ConfigError, match=f":3: sync.maintenance_work_mem: '{bad}' {why}"):
            load_config(p)
