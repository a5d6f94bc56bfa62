"""Loading a pipeline spec: ``${NAME}`` references, the build context, every problem at once."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from docker_delivery.errors import SpecInvalid
from docker_delivery.spec import ServiceSpec, load_spec
from docker_delivery.spec.loader import load_yaml, read_source
from docker_delivery.spec.messages import describe_errors, item_name, join_path
from docker_delivery.strategies.settings import validating_a_spec
from docker_delivery.templates.pipeline_spec.sections import PipelineSettings
from docker_delivery.templates.pipeline_spec.spec import PipelineSpec

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    """``${NAME}`` / ``${NAME:-default}`` in every string of ``value``, from ``env``. As in a
    shell (and a compose file), the default stands for a name that is unset or empty."""
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if env.get(name) or (name in env and default is None):
                return env[name]
            if default is not None:
                return default
            problems.append(f"{path or 'spec'}: ${{{name}}} is not set (give ${{{name}:-default}})")
            return ""

        return _ENV_REF.sub(one, value) if "$" in value else value
    if isinstance(value, Mapping):
        return {k: _substitute(v, join_path(path, k), env, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [
            _substitute(v, f"{path}[{item_name(v) or i}]", env, problems)
            for i, v in enumerate(value)
        ]
    return value


def _resolve_context(data: dict[str, Any], base: Path) -> None:
    """``pipeline.build.context`` made absolute against the spec file's directory."""
    pipeline = data.get("pipeline")
    build = pipeline.get("build") if isinstance(pipeline, Mapping) else None
    if isinstance(build, dict):
        context = build.get("context", ".")
        if isinstance(context, str) and "{{" not in context:
            build["context"] = str((base / context).resolve())


def _context_problems(spec: PipelineSpec) -> list[str]:
    build = spec.pipeline.build
    if "{{" in build.context:
        return []
    context = Path(build.context)
    if not context.is_dir():
        return [f"pipeline.build.context: {context} is not a directory"]
    if "{{" not in build.dockerfile and not (context / build.dockerfile).is_file():
        return [f"pipeline.build.dockerfile: {build.dockerfile} is not in {context}"]
    return []


def load_pipeline(
    source: str | Path | Mapping[str, Any] | PipelineSpec,
    *,
    environ: Mapping[str, str] | None = None,
) -> PipelineSpec:
    """A validated :class:`PipelineSpec` from a YAML file (a Path, or a string ending in .yaml
    or .yml), YAML text, or a mapping. Raises :class:`SpecInvalid` listing every problem with
    its field path. ``environ`` (default: ``os.environ``) fills ``${NAME}`` references."""
    if isinstance(source, PipelineSpec):
        found = source.problems() + _context_problems(source)
        if found:
            raise SpecInvalid(f"pipeline {source.dag_id}", found)
        return source
    base = Path.cwd()
    if isinstance(source, Mapping):
        data: Any = source
        origin = "pipeline spec"
    else:
        text, origin, where = read_source(source)
        base = where or base
        data = load_yaml(text, origin)
    if not isinstance(data, Mapping):
        raise SpecInvalid(
            origin, ["the spec must be a mapping: service, image, environments, pipeline"]
        )
    problems: list[str] = []
    data = _substitute(data, "", os.environ if environ is None else environ, problems)
    if problems:
        raise SpecInvalid(origin, problems)
    _resolve_context(data, base)
    known = [*ServiceSpec.model_fields, "pipeline"]
    for key in data:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            problems.append(
                f"{join_path('', key)}: unknown key"
                + (f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(known)}")
            )
    service_part = {k: v for k, v in data.items() if k in ServiceSpec.model_fields}
    try:
        load_spec(service_part)
    except SpecInvalid as exc:
        problems += exc.problems
    if "pipeline" not in data:
        problems.append("pipeline: required: the build, tests and stages of the delivery")
    else:
        try:
            with validating_a_spec():
                PipelineSettings.model_validate(data["pipeline"])
        except ValidationError as exc:
            problems += describe_errors(exc, data["pipeline"], PipelineSettings, "pipeline")
    if problems:
        raise SpecInvalid(origin, problems)
    with validating_a_spec():
        spec = PipelineSpec.model_validate(data)
    problems = spec.problems() + _context_problems(spec)
    if problems:
        raise SpecInvalid(origin, problems)
    return spec


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a pipeline spec file, for editors (``docker-delivery schema``).

    An environment is its overrides merged onto ``defaults`` (any field may come from either),
    so nothing under ``environments`` and ``defaults`` is required in the file: the schema
    says which fields exist and their types; ``docker-delivery validate`` checks the merged
    result."""
    schema = PipelineSpec.model_json_schema()
    defs = schema.get("$defs", {})
    pending = ["EnvironmentSpec", "EnvironmentDefaults"]
    relaxed: set[str] = set()
    while pending:
        name = pending.pop()
        if name in relaxed or name not in defs:
            continue
        relaxed.add(name)
        defs[name].pop("required", None)
        text = json.dumps(defs[name])
        pending += [ref.rsplit("/", 1)[-1] for ref in re.findall(r'"#/\$defs/([^"]+)"', text)]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "docker-delivery pipeline spec"
    return schema
