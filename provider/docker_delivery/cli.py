# PYTHON_ARGCOMPLETE_OK  (shell completion: eval "$(register-python-argcomplete docker-delivery)")
"""``docker-delivery``: check a pipeline spec, print its plan, or write a starter pipeline.

    docker-delivery validate SPEC...      every problem, one line each with its field path
    docker-delivery plan SPEC             the DAG's tasks per environment, in order (SPEC: a
                                          pipeline spec, or a release file of several services)
    docker-delivery init [--service ...]  a starter spec and DAG file (asks in a terminal)
    docker-delivery status SERVICE ENV [--watch]  what runs, the router, the rollout's stage
    docker-delivery rollback SERVICE ENV  back to the previous release (docker_delivery.cli_rollout)
    docker-delivery continue|abort SERVICE ENV  answer a held rollout (docker_delivery.cli_decide)
    docker-delivery metrics [--by ...]    DORA's five metrics from the ledger, and their levels
    docker-delivery ledger import|upgrade the ledger's database (docker_delivery.cli_ledger)
    docker-delivery incident record|end|list

Exit codes: 0 fine, 1 a spec is invalid (or a file is in the way), 2 bad usage. No command
prints a traceback: every problem is one readable line. Nothing here imports Airflow, but for
finding the ledger through Airflow's configuration or a connection.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from docker_delivery.errors import SpecInvalid, clip_line

__all__ = ["main"]

TYPES = ("min_in_service", "rolling", "blue_green", "ab")
MODES = ("continuous_delivery", "continuous_deployment")
_SERVICE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
_ENV = _SERVICE


class UsageError(Exception):
    """Bad arguments or answers: exit code 2."""


# -- validate and plan -----------------------------------------------------------------------


def _load(path: str) -> Any:
    """A pipeline spec, or a release (several services released as one)."""
    from docker_delivery.templates.pipeline_spec import load_pipeline
    from docker_delivery.templates.release_spec import load_release, release_source

    if release_source(Path(path)):
        return load_release(Path(path))
    return load_pipeline(Path(path))


def _problems(path: str) -> tuple[Any, list[str]]:
    """(the spec, []) or (None, the problems): never an exception."""
    try:
        return _load(path), []
    except SpecInvalid as exc:
        return None, list(exc.problems)
    except Exception as exc:  # a bug of ours must still read as one line, not a traceback
        return None, [clip_line(f"cannot check it: {type(exc).__name__}: {exc}")]


def _print_problems(path: str, problems: Sequence[str], out: TextIO) -> None:
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    print(f"{path}: invalid, {count}:", file=out)
    for problem in problems[: SpecInvalid.SHOWN]:
        print(f"  - {problem}", file=out)
    if len(problems) > SpecInvalid.SHOWN:
        print(f"  - ... and {len(problems) - SpecInvalid.SHOWN} more", file=out)


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    status = 0
    report = []
    for path in args.specs:
        spec, problems = _problems(path)
        report.append({"spec": path, "valid": not problems, "problems": problems})
        if problems:
            status = 1
            if not args.json:
                _print_problems(path, problems, out)
        elif not args.json and hasattr(spec, "pipelines"):  # a release
            from docker_delivery.templates.release_plan import plan_release

            print(
                f"{path}: valid: DAG {spec.dag_id}, {len(plan_release(spec))} tasks; release "
                f"of {', '.join(spec.order)} to {', '.join(spec.settings.environments)}",
                file=out,
            )
        elif not args.json:
            from docker_delivery.templates.plan import TYPE_NAMES, plan_tasks

            stages = ", ".join(
                f"{s.environment} ({TYPE_NAMES[s.deploy.type]})" for s in spec.pipeline.stages
            )
            print(
                f"{path}: valid: DAG {spec.dag_id}, {len(plan_tasks(spec))} tasks; {stages}",
                file=out,
            )
    if args.json:
        print(json.dumps(report if len(report) > 1 else report[0], indent=2), file=out)
    return status


def cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    spec, problems = _problems(args.spec)
    if problems:
        _print_problems(args.spec, problems, out)
        return 1
    from docker_delivery.templates.plan import describe_plan, plan_data

    if hasattr(spec, "pipelines"):  # a release
        from docker_delivery.templates.release_plan import (
            describe_release_plan,
            release_plan_data,
        )

        describe_plan, plan_data = describe_release_plan, release_plan_data  # type: ignore[assignment]
    if args.json:
        print(json.dumps(plan_data(spec), indent=2), file=out)
    else:
        print(describe_plan(spec), file=out)
    return 0


def cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    """The JSON Schema of a pipeline spec (the YAML files): for editors' completion and checks."""
    from docker_delivery.templates.pipeline_spec.loading import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True), file=out)
    return 0


# -- init ------------------------------------------------------------------------------------


@dataclass
class Answers:
    service: str = ""
    repository: str = ""
    context: str = "."
    dockerfile: str = "Dockerfile"
    port: int = 8080
    health_path: str = "/health"
    environments: list[str] = field(default_factory=lambda: ["staging", "production"])
    deploy: dict[str, str] = field(default_factory=dict)
    router_ports: dict[str, int] = field(default_factory=dict)
    mode: str = "continuous_delivery"
    tests: list[tuple[str, str]] = field(default_factory=list)
    dags_dir: str = "dags"


DEFAULT_REGISTRY = "localhost:5000"  # a registry on the machine that runs the builds


def _default_type(env: str, last: bool) -> str:
    return "blue_green" if last and env.startswith("prod") else "min_in_service"


def _fill_defaults(a: Answers) -> None:
    if not a.repository:
        a.repository = f"{DEFAULT_REGISTRY}/{a.service}"
    for i, env in enumerate(a.environments):
        a.deploy.setdefault(env, _default_type(env, i == len(a.environments) - 1))
        a.router_ports.setdefault(env, 18100 + 10 * i)


Ask = Callable[[str, str], str]


def _ask_all(a: Answers, given: set[str], ask: Ask) -> None:
    """Ask for what the flags did not give, offering defaults."""
    if "service" not in given:
        a.service = ask("Service name (lower-case letters, digits, '-')", a.service or "web")
    if "repository" not in given:
        a.repository = ask(
            "Image repository the pipeline pushes to", f"{DEFAULT_REGISTRY}/{a.service}"
        )
    if "context" not in given:
        a.context = ask("Build context (the directory with the Dockerfile)", a.context)
    if "port" not in given:
        a.port = _int(ask("Port the app listens on in its container", str(a.port)), "port")
    if "environments" not in given:
        a.environments = _list(ask("Environments, in delivery order", ",".join(a.environments)))
    for i, env in enumerate(a.environments):
        last = i == len(a.environments) - 1
        if env not in a.deploy:
            question = f"Deployment type for {env} ({', '.join(TYPES)})"
            a.deploy[env] = ask(question, _default_type(env, last))
        if env not in a.router_ports:
            port = ask(f"Host port of {env}'s router", str(18100 + 10 * i))
            a.router_ports[env] = _int(port, f"router port of {env}")
    if "mode" not in given:
        a.mode = ask(f"Mode ({', '.join(MODES)})", a.mode)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a number") from None


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _check(a: Answers) -> None:
    if not _SERVICE.match(a.service):
        raise UsageError(
            f"service {a.service!r}: 1-32 lower-case letters, digits or '-' (no '-' at the ends)"
        )
    if not a.environments:
        raise UsageError("give at least one environment")
    for env in a.environments:
        if not _ENV.match(env):
            raise UsageError(f"environment {env!r}: 1-32 lower-case letters, digits or '-'")
        if a.deploy.get(env) not in TYPES:
            raise UsageError(f"deployment type of {env}: one of {', '.join(TYPES)}")
    if a.mode not in MODES:
        raise UsageError(f"mode: one of {', '.join(MODES)}")


def _q(value: str) -> str:
    """A YAML scalar: plain when safe, else double-quoted (JSON is YAML)."""
    if re.match(r"^[A-Za-z0-9_./-]+$", value) and value.lower() not in {
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "null",
        "~",
    }:
        return value
    return json.dumps(value)


def render_spec(a: Answers, spec_dir: Path) -> str:
    """The starter spec's YAML text (with comments)."""
    context = Path(a.context)
    if not context.is_absolute():
        context = Path(os.path.relpath(Path.cwd() / context, spec_dir.resolve()))
    targets = {"rolling": "swarm"}
    last = a.environments[-1]
    lines = [
        f"# The delivery pipeline of {a.service}: docker-delivery validate this file to check it,",
        "# docker-delivery plan it to list the DAG's tasks. Reference: docker_delivery.templates.",
        f"service: {_q(a.service)}",
        f"image: {_q(a.repository)}          # the repository the pipeline builds and promotes",
        "defaults:",
        "  replicas: 2",
        f"  port: {a.port}",
        f"  health_check: {{path: {_q(a.health_path)}, interval: 1}}",
        "environments:",
    ]
    for env in a.environments:
        kind = a.deploy[env]
        port = a.router_ports[env]
        router = f"port: {port}"
        if kind == "blue_green":
            router += f", preview_port: {port + 1}"
        target = targets.get(kind, "engine")
        lines.append(f"  {env}:")
        if target != "engine":
            lines.append(f"    target: {target}")
        lines.append(f"    router: {{{router}}}")
    lines += [
        "pipeline:",
        f"  mode: {a.mode}",
        "  trigger: {schedule: null}        # or a cron line; manual runs take revision / image",
        "  build:",
        f"    context: {_q(str(context))}",
        f"    dockerfile: {_q(a.dockerfile)}",
    ]
    if a.tests:
        lines.append("  tests:                            # in the image, by digest, in parallel")
        for name, command in a.tests:
            argv = ", ".join(_q(part) for part in shlex.split(command))
            lines.append(f"    - {{name: {_q(name)}, command: [{argv}]}}")
    else:
        lines += [
            "  tests: []                         # e.g. - {name: unit, command: [pytest, -q]}",
        ]
    lines.append("  stages:                           # one per environment, in order")
    for env in a.environments:
        kind = a.deploy[env]
        lines.append(f"    - environment: {env}")
        if a.mode == "continuous_delivery" and env == last:
            lines.append("      approval: true                # a human approves first")
        lines.append(f"      deploy: {{type: {kind}}}")
        lines.append("      verify: {health: true}")
    return "\n".join(lines) + "\n"


def render_dag(a: Answers, spec_name: str) -> str:
    dag_id = "deliver_" + a.service.replace("-", "_")
    return (
        f'"""Airflow DAG {dag_id}: {a.service} delivered by docker-delivery.\n\n'
        f"The pipeline is its spec, pipelines/{spec_name}: edit that, not this file.\n"
        '"""\n\n'
        "from pathlib import Path\n\n"
        "from docker_delivery.templates import delivery_pipeline\n\n"
        f'dag = delivery_pipeline(Path(__file__).parent / "pipelines" / "{spec_name}")\n'
    )


def _tty_ask(inp: TextIO, out: TextIO) -> Ask:
    def ask(question: str, default: str) -> str:
        out.write(f"{question} [{default}]: ")
        out.flush()
        line = inp.readline()
        if not line:
            raise UsageError("no answer (end of input)")
        return line.strip() or default

    return ask


def cmd_init(
    args: argparse.Namespace, out: TextIO, inp: TextIO, interactive: bool | None = None
) -> int:
    a = Answers()
    given: set[str] = set()
    for name in ("service", "repository", "context", "port", "mode", "dockerfile"):
        value = getattr(args, name)
        if value is not None:
            setattr(a, name, value)
            given.add(name)
    if args.environments is not None:
        a.environments = _list(args.environments)
        given.add("environments")
    for item in args.deploy or []:
        env, _, kind = item.partition("=")
        if not kind:
            raise UsageError(f"--deploy {item!r}: give ENV=TYPE, e.g. production=blue_green")
        a.deploy[env.strip()] = kind.strip()
    if args.type is not None:
        for env in a.environments:
            a.deploy.setdefault(env, args.type)
    for item in args.router_port or []:
        env, _, port = item.partition("=")
        a.router_ports[env.strip()] = _int(port, f"--router-port {item}")
    for item in args.test or []:
        name, _, command = item.partition("=")
        if not command:
            raise UsageError(f"--test {item!r}: give NAME=COMMAND, e.g. unit='pytest -q'")
        a.tests.append((name.strip(), command))
    a.dags_dir = args.dags_dir
    if interactive is None:
        interactive = not args.no_input and inp.isatty()
    if interactive:
        _ask_all(a, given, _tty_ask(inp, out))
    elif "service" not in given:
        raise UsageError("init: give --service NAME (or run it in a terminal to be asked)")
    _fill_defaults(a)
    _check(a)

    dags = Path(a.dags_dir)
    spec_name = f"{a.service}.yaml"
    spec_path = dags / "pipelines" / spec_name
    dag_path = dags / f"deliver_{a.service.replace('-', '_')}.py"
    taken = [p for p in (spec_path, dag_path) if p.exists()]
    if taken and not args.force:
        for path in taken:
            print(f"{path}: exists; not overwritten (--force to replace it)", file=out)
        return 1
    text = render_spec(a, spec_path.parent)
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(text, encoding="utf-8")
    dag_path.write_text(render_dag(a, spec_name), encoding="utf-8")
    print(f"wrote {spec_path}", file=out)
    print(f"wrote {dag_path}", file=out)
    _, problems = _problems(str(spec_path))
    if problems:
        print("to do before the first run:", file=out)
        for problem in problems:
            print(f"  - {problem}", file=out)
    else:
        print(f"{spec_path}: valid; `docker-delivery plan {spec_path}` lists its tasks", file=out)
    return 0


# -- the command line ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Help formatted as Airflow's own CLI formats it (rich-argparse); errors as UsageError."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from rich_argparse import RichHelpFormatter

        kwargs.setdefault("formatter_class", RichHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # argparse exits 2 with usage, never a traceback
        raise UsageError(message)


def _yaml_files(prefix: str, **_: Any) -> list[str]:
    """Shell completion of a SPEC: YAML files and directories."""
    from argcomplete.completers import FilesCompleter

    return list(FilesCompleter(("yaml", "yml"))(prefix))


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="docker-delivery",
        description="Check, plan and start docker-delivery pipelines (Airflow DAGs from specs).",
    )
    from docker_delivery import __version__

    p.add_argument("--version", action="version", version=f"docker-delivery {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    v = sub.add_parser("validate", help="check pipeline specs; list every problem with its path")
    v.add_argument(  # type: ignore[attr-defined]  # argcomplete's completer attribute
        "specs", nargs="+", metavar="SPEC", help="pipeline spec (YAML)"
    ).completer = _yaml_files
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    pl = sub.add_parser("plan", help="print the tasks the DAG will have, per environment")
    pl.add_argument("spec", metavar="SPEC").completer = _yaml_files  # type: ignore[attr-defined]
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    sub.add_parser(
        "schema", help="print the JSON Schema of pipeline specs (for editors: YAML completion)"
    )
    i = sub.add_parser(
        "init", help="write a starter spec and DAG file (asks for what flags do not give)"
    )
    i.add_argument("--service", help="service name (lower-case letters, digits, '-')")
    i.add_argument("--repository", help=f"image repository (default {DEFAULT_REGISTRY}/SERVICE)")
    i.add_argument("--context", help="build context directory (default .)")
    i.add_argument("--dockerfile", help="Dockerfile in the context (default Dockerfile)")
    i.add_argument("--port", type=int, help="the app's port in its container (default 8080)")
    i.add_argument("--environments", help="comma-separated, in order (default staging,production)")
    i.add_argument("--type", choices=TYPES, help="deployment type of every environment")
    i.add_argument("--deploy", action="append", metavar="ENV=TYPE", help="one environment's type")
    i.add_argument("--router-port", action="append", metavar="ENV=PORT")
    i.add_argument("--mode", choices=MODES, help="default continuous_delivery")
    i.add_argument("--test", action="append", metavar="NAME=COMMAND", help="a test in the image")
    i.add_argument("--dags-dir", default="dags", help="where the DAG file goes (default dags)")
    i.add_argument("--force", action="store_true", help="overwrite existing files")
    i.add_argument("--no-input", action="store_true", help="never ask, even in a terminal")
    from docker_delivery import cli_decide, cli_ledger, cli_rollout

    cli_rollout.add_parsers(sub)
    cli_decide.add_parsers(sub)
    cli_ledger.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        built = parser()
        if argv is None:  # the command line: answer the shell's completion, if it asks
            import argcomplete

            argcomplete.autocomplete(built)
        args = built.parse_args(argv)
        if args.command == "validate":
            return cmd_validate(args, out)
        if args.command == "plan":
            return cmd_plan(args, out)
        if args.command == "schema":
            return cmd_schema(args, out)
        from docker_delivery import cli_decide, cli_ledger, cli_rollout

        if args.command in cli_decide.COMMANDS:
            return cli_decide.run(args, out)
        if args.command in cli_ledger.COMMANDS:
            return cli_ledger.run(args, out)
        if args.command in cli_rollout.COMMANDS:
            return cli_rollout.run(args, out)
        return cmd_init(args, out, sys.stdin)
    except UsageError as exc:
        print(f"docker-delivery: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("docker-delivery: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"docker-delivery: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
