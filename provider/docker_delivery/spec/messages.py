"""Spec problems in the words of the person who wrote the spec: one ``field.path: message`` line
per problem, shared by the service and the pipeline spec.

Paths name a list item by its ``environment`` or ``name`` where it has one
(``pipeline.stages[production].deploy``), keys that are not plain names are quoted (and cut to
40 characters), an unknown key gets its closest known one, and input values are never quoted by
pydantic's messages (our own checks quote at most :func:`~docker_delivery.errors.clip`'s worth).

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from docker_delivery.errors import clip

__all__ = ["describe_errors", "item_name", "join_path", "plain_message", "unwrap_annotation"]

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_PATH_LINE = re.compile(r"^([A-Za-z_][\w.-]*(?:\[[^\]]*\][\w.-]*)*): (.+)$", re.DOTALL)
_PLAIN = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "literal_error": "must be one of {expected}",
    "string_type": "must be a string (quote it in YAML: '8080', 'true')",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "list_type": "must be a list",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def unwrap_annotation(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> X (a union of several types stays a union)."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def join_path(path: str, key: Any) -> str:
    """``path.key``, or ``path['a key']`` for a key that is not a plain name."""
    text = str(key)
    if not _PLAIN_KEY.match(text):
        return f"{path}[{clip(text, 40)}]"
    return f"{path}.{text}" if path else text


def item_name(item: Any) -> str | None:
    """What names a list item in a path: its ``environment`` or ``name``."""
    if isinstance(item, Mapping):
        for key in ("environment", "name"):
            value = item.get(key)
            if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable():
                return value.replace("]", "?")
    return None


def plain_message(err: Mapping[str, Any]) -> str:
    """A pydantic error in the words a spec's author reads (the field path is added apart)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _PLAIN:
        return _PLAIN[kind].format(**{k: ctx.get(k) for k in ("ge", "gt", "le", "lt", "expected")})
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def _models(tp: Any) -> list[type[BaseModel]]:
    tp = unwrap_annotation(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    if get_origin(tp) in (Union, types.UnionType):
        return [m for a in get_args(tp) for m in _models(a)]
    return []


def _tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    args = get_args(field.annotation) if field is not None else ()
    return str(args[0]) if args else None


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _known_keys(root: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The keys the model holding ``loc``'s last item knows ([] when none is found)."""
    tp: Any = root
    for item in loc[:-1]:
        tp = unwrap_annotation(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = _fields(tp)
            if item not in fields:
                return []
            tp = fields[item].annotation
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        elif get_origin(tp) in (Union, types.UnionType):
            # a tagged union: pydantic puts the tag into loc
            tp = next((m for m in _models(tp) if _tag(m) == item), None)
            if tp is None:
                return []
        else:
            return []
    models = _models(tp)
    return list(_fields(models[0])) if len(models) == 1 else []


def _message(root: type[BaseModel], err: Mapping[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        known = _known_keys(root, err["loc"])
        hint = difflib.get_close_matches(str(err["loc"][-1])[:100], known, n=1)
        if hint:
            return f"unknown key (did you mean {hint[0]!r}?)"
        return "unknown key" + (f"; known: {', '.join(known)}" if known else "")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        if kind == "union_tag_not_found":
            return f"required: one of {', '.join(tags)}"
        hint = difflib.get_close_matches(str(ctx.get("tag"))[:100], tags, n=1)
        also = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"must be one of {', '.join(tags)}{also}"
    return plain_message(err)


def _path(loc: Sequence[Any], data: Any, prefix: str) -> str:
    """``('stages', 1, 'deploy', 'blue_green', 'x')`` -> ``pipeline.stages[production].deploy.x``
    (a union's tag is left out)."""
    out, node = prefix, data
    for item in loc:
        if item == "[key]":
            continue
        if isinstance(item, int):
            entry = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
            out += f"[{item_name(entry) or item}]"
            node = entry
            continue
        key = str(item)
        if isinstance(node, Mapping) and node.get("type") == key and key not in node:
            continue  # the tag of a discriminated union, not a key of the document
        out = join_path(out, key)
        node = node.get(item) if isinstance(node, Mapping) else None
    return out


def describe_errors(
    exc: ValidationError, data: Any, root: type[BaseModel], prefix: str = ""
) -> list[str]:
    """One ``path: message`` line per problem of ``data`` (validated as ``root``). A check
    across fields that names its field (``secrets[DB]: ...``) is put under its path. Problems of
    a service spec's ``defaults`` are not repeated for every environment that inherits them."""
    lines: list[str] = []
    in_defaults: set[tuple[tuple[Any, ...], str]] = set()
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        where = _path(loc, data, prefix)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            where += ".type"
        for line in _message(root, err).split("\n"):
            match = _PATH_LINE.match(line)
            if match and err["type"] == "value_error":
                sub, line = match.group(1), match.group(2)
                at = (f"{where}.{sub}" if where else sub).replace(".[", "[")
            else:
                sub, at = "", where
            key = (loc[2:] if loc[:1] == ("environments",) else loc[1:], sub + line)
            if not prefix and loc[:1] == ("defaults",):
                in_defaults.add(key)
            elif not prefix and loc[:1] == ("environments",) and key in in_defaults:
                continue
            lines.append(f"{at}: {line}" if at else line)
    return list(dict.fromkeys(lines))
