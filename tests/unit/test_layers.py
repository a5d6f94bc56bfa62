"""The one rule of the layers (shared/DESIGN.md): the domain never imports Airflow, directly or
through another module. import-linter reads the contract from pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(*config: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", *config],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_domain_module_imports_airflow() -> None:
    run = lint()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in run.stdout


def test_the_check_sees_an_import_of_airflow(tmp_path: Path) -> None:
    """The same kind of contract on the operators (which import Airflow, as they should) is
    broken: the check reads the real import graph."""
    config = tmp_path / "contract.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "docker_delivery"\n'
        "include_external_packages = true\n\n"
        '[[tool.importlinter.contracts]]\nname = "operators without Airflow"\n'
        'type = "forbidden"\nsource_modules = ["docker_delivery.operators.deploy"]\n'
        'forbidden_modules = ["airflow"]\n'
    )
    run = lint(str(config))
    assert run.returncode == 1 and "Contracts: 0 kept, 1 broken." in run.stdout, run.stdout
    assert "docker_delivery.operators.deploy -> airflow" in run.stdout
