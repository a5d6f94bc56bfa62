"""Tests of the migration runner that need no database (stdlib unittest; run in the image).

The runner against a real PostgreSQL is tested by the project's integration tests
(tests/integration/test_migrations.py), on the test bed's database.
"""

from __future__ import annotations

import io
import json
import tempfile
import unittest
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

import db
import migrate


def applied_row(migration: migrate.Migration, checksum: str | None = None) -> dict:
    return {
        "version": migration.version,
        "name": migration.name,
        "phase": migration.phase,
        "checksum": checksum or migration.checksum,
        "applied_at": "2026-01-01T00:00:00+00:00",
        "applied_by": "registry/app@sha256:" + "0" * 64,
        "duration_ms": 3,
    }


class FolderTest(unittest.TestCase):
    def folder(self, *names: str) -> Path:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        for name in names:
            (Path(tmp.name) / name).write_text(f"-- {name}\nSELECT 1;\n")
        return Path(tmp.name)


class LoadTest(FolderTest):
    def test_the_image_migrations_load_in_order_with_their_phases(self) -> None:
        migrations = migrate.load()
        self.assertEqual(
            [(m.version, m.name, m.phase) for m in migrations[:3]],
            [
                (1, "create_greetings", "expand"),
                (2, "greetings_body", "expand"),
                (3, "drop_greetings_message", "contract"),
            ],
        )
        self.assertTrue(all(len(m.checksum) == 64 for m in migrations))

    def test_phase_suffix_and_default(self) -> None:
        folder = self.folder("0002_b.contract.sql", "0001_a.sql", "0003_c.expand.sql")
        self.assertEqual(
            [(m.id, m.phase) for m in migrate.load(folder)],
            [("0001_a", "expand"), ("0002_b", "contract"), ("0003_c", "expand")],
        )

    def test_bad_names_and_repeated_versions_are_refused(self) -> None:
        for names in (["1_short.sql"], ["0001_a.later.sql"], ["0001_Upper.sql"]):
            with self.assertRaises(migrate.MigrationError) as caught:
                migrate.load(self.folder(*names))
            self.assertIn("NNNN_name.sql", str(caught.exception))
        with self.assertRaises(migrate.MigrationError) as caught:
            migrate.load(self.folder("0001_a.sql", "0001_b.contract.sql"))
        self.assertIn("version 0001 is used twice", str(caught.exception))


class PlanTest(FolderTest):
    def setUp(self) -> None:
        self.m = migrate.load(
            self.folder(
                "0001_a.sql", "0002_b.expand.sql", "0003_c.contract.sql", "0004_d.expand.sql"
            )
        )

    def test_expand_applies_missing_expands_only(self) -> None:
        plan = migrate.plan(self.m, {1: applied_row(self.m[0])}, "expand")
        self.assertEqual([m.version for m in plan.to_apply], [2, 4])
        self.assertEqual([m.version for m in plan.other_phase], [3])

    def test_nothing_to_do_when_all_applied(self) -> None:
        applied = {m.version: applied_row(m) for m in self.m}
        plan = migrate.plan(self.m, applied, "expand")
        self.assertEqual((plan.to_apply, plan.edited, plan.blocked), ([], [], []))

    def test_contract_waits_for_the_expands_before_it(self) -> None:
        plan = migrate.plan(self.m, {1: applied_row(self.m[0])}, "contract")
        self.assertEqual(([m.version for m in plan.blocked], plan.to_apply), ([3], []))
        applied = {m.version: applied_row(m) for m in self.m[:2]}
        plan = migrate.plan(self.m, applied, "contract")
        self.assertEqual([m.version for m in plan.to_apply], [3])  # 0004 comes after it

    def test_an_edited_migration_is_reported(self) -> None:
        plan = migrate.plan(self.m, {1: applied_row(self.m[0], checksum="x")}, "expand")
        self.assertEqual([m.version for m in plan.edited], [1])

    def test_status_counts_versions_by_phase_and_unknown_ones(self) -> None:
        rows = {m.version: applied_row(m) for m in self.m[:3]}
        rows[9] = {**applied_row(self.m[2]), "version": 9, "name": "future"}
        status = migrate.status_of(self.m, rows)
        self.assertEqual(
            (status["current_version"], status["expand_version"], status["contract_version"]),
            (9, 2, 9),
        )
        self.assertEqual(status["image_version"], 4)
        self.assertEqual([p["version"] for p in status["pending"]], [4])
        self.assertEqual([u["version"] for u in status["unknown"]], [9])
        json.dumps(status)

    def test_status_of_an_empty_database(self) -> None:
        status = migrate.status_of(self.m, {})
        self.assertEqual(status["current_version"], 0)
        self.assertEqual(len(status["pending"]), 4)


class CommandTest(unittest.TestCase):
    def run_main(self, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        buffer = io.StringIO()
        with mock.patch.dict("os.environ", env or {}, clear=True), redirect_stdout(buffer):
            code = migrate.main(list(argv))
        return code, buffer.getvalue()

    def test_list_needs_no_database(self) -> None:
        code, output = self.run_main("list")
        self.assertEqual(code, 0)
        listing = json.loads(output)
        self.assertGreaterEqual(listing["image_version"], 3)

    def test_without_a_url_up_fails_clearly(self) -> None:
        code, output = self.run_main("up", "--phase", "expand")
        self.assertEqual(code, 2)
        self.assertIn("no database configured", output)

    def test_an_unreadable_url_file_fails_clearly(self) -> None:
        code, output = self.run_main("status", env={"DATABASE_URL_FILE": "/nonexistent/url"})
        self.assertEqual(code, 2)
        self.assertIn("DATABASE_URL_FILE=/nonexistent/url cannot be read", output)


class MaskTest(unittest.TestCase):
    URL = "postgresql://demo:s3cr%40t@db.example:5432/app"

    def test_the_url_and_its_password_are_masked(self) -> None:
        text = f"failed for {self.URL}; password s3cr@t or s3cr%40t"
        masked = db.mask(text, self.URL)
        self.assertNotIn("s3cr", masked)
        self.assertEqual(masked, "failed for ***; password *** or ***")

    def test_describe_url_names_no_credentials(self) -> None:
        self.assertEqual(db.describe_url(self.URL), "db.example:5432/app")

    def test_the_url_file_wins_over_the_variable(self) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".url") as f:
            f.write(self.URL + "\n")
            f.flush()
            url = db.database_url({"DATABASE_URL_FILE": f.name, "DATABASE_URL": "other"})
        self.assertEqual(url, self.URL)
        self.assertIsNone(db.database_url({}))


if __name__ == "__main__":
    unittest.main()
