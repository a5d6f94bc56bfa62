"""The migration step's plain parts, without Docker: the database URL, the spec, the status."""

from __future__ import annotations

import pickle

import pytest

from docker_delivery.errors import InvalidReference
from docker_delivery.migrations import (
    Database,
    InvalidMigrationSpec,
    MigrationFailed,
    MigrationSpec,
    RollbackPastContract,
    StatusUnreadable,
    parse_status,
)
from docker_delivery.migrations.runner import _owner_of

PINNED = "127.0.0.1:5000/shop/api@sha256:" + "a" * 64


def test_the_database_shows_host_port_and_name_only() -> None:
    db = Database.from_parts(
        host="db.internal", port=5433, user="app", password="p@ss:w/rd", name="shop"
    )
    assert db.url == "postgresql://app:p%40ss%3Aw%2Frd@db.internal:5433/shop"
    assert (db.display, str(db), repr(db)) == (
        "db.internal:5433/shop",
        "db.internal:5433/shop",
        "Database('db.internal:5433/shop')",
    )
    assert Database("postgres://u:p@db.internal/shop").port == 5432  # the scheme's default


def test_masking_hides_the_url_and_the_password_raw_and_encoded() -> None:
    db = Database.from_parts(host="h", user="app", password="p@ss:w/rd", name="shop")
    text = f"dsn={db.url} raw=p@ss:w/rd encoded=p%40ss%3Aw%2Frd"
    assert db.mask(text) == "dsn=*** raw=*** encoded=***"


def test_the_lock_key_is_per_host_port_and_database() -> None:
    a = Database("postgresql://u:one@db:5432/shop")
    assert a.key == Database("postgresql://other:two@DB:5432/shop").key  # not the credentials
    assert a.key != Database("postgresql://u:one@db:5432/billing").key
    assert a.key != Database("postgresql://u:one@db:5433/shop").key


@pytest.mark.parametrize(
    "url", ["not a url", "postgresql://u:p@/shop", "postgresql://u:p@db:5432/", "db:5432/x"]
)
def test_a_url_without_host_or_database_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(InvalidMigrationSpec) as caught:
        Database(url)
    assert url not in str(caught.value)


def test_a_connection_must_be_postgres_with_a_database_name() -> None:
    fields = {"host": "db", "port": None, "login": "u", "password": "pw", "extra": {}}
    db = Database.from_connection("c", conn_type="postgres", schema="shop", **fields)
    assert db.url == "postgresql://u:pw@db/shop"
    with_ssl = Database.from_connection(
        "c", conn_type="postgres", schema="shop", **{**fields, "extra": {"sslmode": "require"}}
    )
    assert with_ssl.url.endswith("/shop?sslmode=require")
    with pytest.raises(InvalidMigrationSpec, match="is of type 'mysql'"):
        Database.from_connection("c", conn_type="mysql", schema="shop", **fields)
    with pytest.raises(InvalidMigrationSpec, match="schema"):
        Database.from_connection("c", conn_type="postgres", schema="", **fields)


def test_a_tag_only_image_is_refused() -> None:
    with pytest.raises(InvalidReference, match="not pinned by digest"):
        MigrationSpec(image="127.0.0.1:5000/shop/api:v1")


def test_the_spec_substitutes_the_phase_and_refuses_bad_input() -> None:
    spec = MigrationSpec(image=PINNED, phase="contract")
    assert spec.argv == ["python3", "/app/migrate.py", "up", "--phase", "contract"]
    assert spec.digest == "sha256:" + "a" * 64
    with pytest.raises(InvalidMigrationSpec, match="expand or contract"):
        MigrationSpec(image=PINNED, phase="sideways")  # type: ignore[arg-type]
    with pytest.raises(InvalidMigrationSpec, match="argv"):
        MigrationSpec(image=PINNED, command="migrate up")  # type: ignore[arg-type]
    with pytest.raises(InvalidMigrationSpec, match="never in env"):
        MigrationSpec(image=PINNED, env={"DATABASE_URL": "postgresql://u:p@h/d"})
    with pytest.raises(InvalidMigrationSpec, match="not valid environment variable names"):
        MigrationSpec(image=PINNED, env={"1BAD": "x"})


def test_the_status_is_the_last_json_line() -> None:
    output = (
        "a warning\n"
        '{"current_version": 1, "applied": []}\n'
        '{"current_version": 3, "applied": [{"version": 3, "name": "drop", "phase": "contract"}],'
        ' "image_version": 2}\n'
    )
    status = parse_status(output)
    assert status.current_version == 3
    assert status.applied_ids() == ["0003_drop"]
    assert [row["version"] for row in status.unknown_to_image()] == [3]  # by image_version
    for bad in ("no json here", '{"current_version": "3"}', '{"current_version": true}'):
        with pytest.raises(StatusUnreadable):
            parse_status(bad)


def test_the_secret_file_belongs_to_the_image_user() -> None:
    assert _owner_of("") == (0, 0, True)
    assert _owner_of("1000:2000") == (1000, 2000, True)
    assert _owner_of("app") == (0, 0, False)  # unknown uid: readable by all, in its container


def test_the_errors_survive_pickling() -> None:
    failed = MigrationFailed("boom", exit_code=1, version_before=2, version_after=2)
    again = pickle.loads(pickle.dumps(failed))
    assert (str(again), again.exit_code, again.version_after) == ("boom", 1, 2)
    refused = RollbackPastContract("no", image=PINNED, contracts=("0003_drop",))
    assert pickle.loads(pickle.dumps(refused)).contracts == ("0003_drop",)
