"""The one spec loader against input users do send: each case gets one clear message with its
place in the file, in bounded time and memory, and no message line is longer than a few hundred
characters whatever the input. ``docker-delivery validate`` is measured on each hostile file."""

from __future__ import annotations

import codecs
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from docker_delivery.errors import MESSAGE_LIMIT, SpecInvalid
from docker_delivery.spec import load_spec
from docker_delivery.templates.pipeline_spec import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "dags" / "pipelines"
CLI = Path(sys.executable).parent / "docker-delivery"

BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)
DEEP = "service: web\nenvironments: " + "[" * 10_000 + "]" * 10_000 + "\n"
MERGE = """\
service: web
defaults: {router: {image: haproxy:lts}}
environments:
  staging: &env
    replicas: 3
    env: {LOG_LEVEL: info}
    router: {port: 18080}
  production:
    <<: *env
    router: {port: 18081}
"""


def problems_of(source: Any, *, pipeline: bool = False) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        (load_pipeline if pipeline else load_spec)(source)
    for line in caught.value.problems:
        assert len(line) <= MESSAGE_LIMIT, line
    return caught.value.problems


def pipeline_text(**changes: Any) -> str:
    data = yaml.safe_load((PIPELINES / "min_in_service.yaml").read_text())
    data["pipeline"]["build"]["context"] = str(ROOT / "dags" / "demo_app")
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[last] = value
    return yaml.safe_dump(data)


# -- the cases ---------------------------------------------------------------------------------


def test_an_alias_bomb_is_refused_at_once_where_it_blows_up() -> None:
    started = time.monotonic()
    [problem] = problems_of(BOMB)
    assert time.monotonic() - started < 1.0
    assert problem.startswith("YAML: line 6, column ")
    assert "expands to more than 100,000 values" in problem


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    [problem] = problems_of("service: web\nenvironments: &a {x: *a}\n")
    assert problem == "YAML: line 2, column 22: the alias *a is inside its own anchor"


def test_merge_keys_work_and_an_explicit_key_overrides_a_merged_one() -> None:
    spec = load_spec(MERGE)
    production = spec.environments["production"]
    assert production.replicas == 3 and production.env == {"LOG_LEVEL": "info"}
    assert production.router.port == 18081  # explicit, over the merged 18080


def test_a_key_given_twice_is_still_refused_with_its_place() -> None:
    [problem] = problems_of("service: web\nservice: api\nenvironments: {}\n")
    assert problem == "YAML: line 2, column 1: the key 'service' is given twice"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_a_spec_saved_with_a_byte_order_mark_is_read(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(MERGE.encode(encoding))
    assert load_spec(path).environments["staging"].replicas == 3


def test_utf16_without_a_mark_and_binary_files_are_refused_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(codecs.encode(MERGE, "utf-16-le"))
    [problem] = problems_of(path)
    assert problem.startswith("not a text file: a NUL byte at byte 1 (a binary file, or UTF-16")
    path.write_bytes(b"service: web\n\x89PNG\r\n\x1a\n\xff\xfe garbage")
    [problem] = problems_of(path)
    assert problem == "not UTF-8 text: byte 0x89 at line 2, column 1: save the spec as UTF-8"


def test_a_deeply_nested_document_is_refused_with_its_place() -> None:
    [problem] = problems_of(DEEP)  # flow style: libyaml's scanner meets its own limit first
    assert problem == "YAML: line 2, column 1014: nested deeper than 64 levels"
    block = "service: web\n" + "".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "x"
    [problem] = problems_of(block)
    assert problem == "YAML: line 66, column 129: nested deeper than 64 levels"


def test_a_control_character_is_reported_with_its_line_and_column() -> None:
    [problem] = problems_of("service: web\nenvironments:\n  staging: {replicas: 2\x1b}\n")
    assert problem.startswith("YAML: line 3, column 24: the character '\\x1b' is not allowed")


def test_a_yaml_1_1_boolean_key_stays_its_text() -> None:
    problems = problems_of(pipeline_text(on="push"), pipeline=True)
    assert any(p.startswith("on: unknown key") for p in problems), problems
    problems = problems_of("service: web\nenvironments: {yes: {router: {port: 1}}}\n")
    assert problems == [
        "environments.yes: 'yes' is not a valid name (1-32 lower-case letters, digits or '-', "
        "no '-' at ends)"
    ] or any("environments" in p for p in problems), problems


def test_an_image_written_as_a_url_is_told_so() -> None:
    problems = problems_of("service: web\nimage: https://registry/app\nenvironments: {}\n")
    assert any(
        "an image reference has no scheme: write it without 'https://'" in p for p in problems
    )


def test_a_huge_value_gives_a_short_message() -> None:
    problems = problems_of(f"service: web\nimage: {'a' * 100_000}\nenvironments: {{}}\n")
    assert any("(100,000 characters): longer than 1024 characters" in p for p in problems)
    problems = problems_of({"service": "x" * 100_000, "environments": {"y" * 100_000: {}}})
    assert problems and all(len(p) <= MESSAGE_LIMIT for p in problems)
    many = {f"KEY{i}": "v" for i in range(500)}
    problems = problems_of({"service": "web", "environments": {"s": many}})
    with pytest.raises(SpecInvalid) as caught:
        load_spec({"service": "web", "environments": {"s": many}})
    assert "... and " in str(caught.value) and len(str(caught.value)) < 8000


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("pipeline__build__build_args", {"DB_PASSWORD": "hunter2"}),
        ("pipeline__migrations", {"database_conn_id": "db", "env": {"API_TOKEN": "t0k3n"}}),
        (
            "pipeline__tests",
            [{"name": "unit", "command": ["true"], "environment": {"SECRET_KEY": "k"}}],
        ),
    ],
    ids=["build_args", "migrations_env", "tests_environment"],
)
def test_a_literal_secret_is_flagged_wherever_it_reaches_a_container_or_a_build(
    path: str, value: Any
) -> None:
    problems = problems_of(pipeline_text(**{path: value}), pipeline=True)
    secret = [p for p in problems if "the name says secret and it holds a literal value" in p]
    assert len(secret) == 1, problems
    assert "hunter2" not in secret[0] and "t0k3n" not in secret[0]


def test_a_template_or_a_name_in_not_secrets_is_not_a_literal_secret() -> None:
    text = pipeline_text(
        pipeline__tests=[
            {
                "name": "unit",
                "command": ["true"],
                "environment": {"SECRET_KEY": "{{ conn.app.password }}", "PUBLIC_KEY": "pk"},
            }
        ],
        pipeline__not_secrets=["PUBLIC_KEY"],
    )
    load_pipeline(text)


def test_a_label_named_as_a_secret_is_flagged() -> None:
    problems = problems_of(
        "service: web\nenvironments:\n  s:\n    router: {port: 1}\n"
        "    labels: {com.example.api-token: abc}\n"
    )
    assert problems == [
        "environments.s.labels['com.example.api-token']: the name says secret and a label is "
        "visible to anyone who may inspect a container: keep secrets in secrets, or list it in "
        "not_secrets if it is not a secret"
    ]


# -- docker-delivery validate: time, memory, message length ------------------------------------

MEASURE = """
import json, resource, subprocess, sys, time
started = time.monotonic()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"seconds": time.monotonic() - started, "code": done.returncode,
                  "out": done.stdout + done.stderr,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bomb", BOMB.encode()),
        ("deep", DEEP.encode()),
        ("utf16", codecs.encode(MERGE, "utf-16-le")),
        ("binary", bytes(range(256)) * 64),
        ("control", b"service: web\x1b\n"),
        ("huge_ref", f"service: web\nimage: {'a' * 100_000}\n".encode()),
        ("too_big", b"# " + b"x" * (2 * 1024 * 1024)),
    ],
)
def test_validate_stays_bounded_on_hostile_files(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(CLI), "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    got = json.loads(run.stdout)
    print(name, {k: v for k, v in got.items() if k != "out"})
    assert got["code"] == 1, got["out"]
    lines = got["out"].splitlines()
    assert lines[0].startswith(f"{path}: invalid, ")
    assert all(len(line) <= MESSAGE_LIMIT + 10 for line in lines), got["out"]
    assert "Traceback" not in got["out"] and "cannot check it" not in got["out"]
    assert got["seconds"] < 5.0  # the interpreter's start included; the bomb itself: < 1 s above
    assert got["max_rss_mb"] < 100
