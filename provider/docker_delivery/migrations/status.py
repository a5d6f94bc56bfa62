"""What an image's status command says about the database: its JSON contract, parsed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from docker_delivery.errors import StatusUnreadable


@dataclass(frozen=True)
class MigrationStatus:
    """What an image's status command says about the database (see :func:`parse_status`)."""

    current_version: int
    applied: tuple[Mapping[str, Any], ...]
    raw: Mapping[str, Any]

    def applied_ids(self) -> list[str]:
        return [migration_id(row) for row in self.applied]

    def unknown_to_image(self) -> list[Mapping[str, Any]]:
        """Applied migrations the image does not ship (its code is older than them)."""
        if isinstance(self.raw.get("unknown"), list):
            return [row for row in self.raw["unknown"] if isinstance(row, Mapping)]
        image_version = self.raw.get("image_version")
        if isinstance(image_version, int):
            return [row for row in self.applied if int(row.get("version", 0)) > image_version]
        raise StatusUnreadable(
            "the status reports neither `unknown` (applied migrations the image does not ship) "
            "nor `image_version`; a rollback cannot be checked against it"
        )


def parse_status(output: str) -> MigrationStatus:
    """The status JSON object on the last line of ``output`` that holds one."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        version = raw.get("current_version") if isinstance(raw, dict) else None
        if isinstance(version, bool) or not isinstance(version, int):
            raise StatusUnreadable(f"the status JSON has no integer current_version: {line[:200]}")
        applied = raw.get("applied") or []
        if not isinstance(applied, list) or not all(isinstance(r, dict) for r in applied):
            raise StatusUnreadable("the status JSON's `applied` is not a list of objects")
        return MigrationStatus(version, tuple(applied), raw)
    raise StatusUnreadable("the status command printed no JSON object")


def migration_id(row: Mapping[str, Any]) -> str:
    version = row.get("version")
    number = f"{version:04d}" if isinstance(version, int) else str(version)
    return f"{number}_{row['name']}" if row.get("name") else number
