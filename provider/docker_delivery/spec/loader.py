"""The one YAML loader of the service and pipeline specs: hostile input gets one clear message.

A spec comes from a person's editor, a repository, or a pasted snippet. Whatever it holds, loading
it ends in a document or in :class:`~docker_delivery.errors.SpecInvalid` with one line that says
where (line and column) and what, in bounded time and memory:

* the file is read up to :data:`MAX_BYTES`; UTF-8 (with or without a byte-order mark) and
  UTF-16/32 with a byte-order mark are read, anything else (a binary file, UTF-16 without a
  mark) is refused with the place of the first byte that is not text;
* before anything is built, one pass over the parser's events (iterative, in C where PyYAML has
  its C loader) measures the document: nesting deeper than :data:`MAX_DEPTH` and more than
  :data:`MAX_NODES` values once aliases are expanded (an "alias bomb": a few KB that would
  expand to billions of values) are refused there, as is an alias inside its own anchor;
* mapping keys given twice are refused (PyYAML keeps the last one without a word); merge keys
  (``<<: *defaults``) work, and a key given explicitly overrides a merged one; a plain key
  that YAML 1.1 reads as a boolean or null (``on:``, ``yes:``, ``null:``) stays the text it is;
* a control character, a tab where YAML wants spaces and every other YAML error is reported
  with its line and column.

This module is domain code: it never imports Airflow.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
)

from docker_delivery.errors import SpecInvalid, clip, clip_line

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "load_yaml", "read_source"]

MAX_BYTES = 1024 * 1024
"""A spec is a few KB; a file past 1 MiB is not one."""
MAX_DEPTH = 64
"""Nesting levels: a spec needs about 8."""
MAX_NODES = 100_000
"""Values in the document once aliases are expanded: a large spec has a few thousand."""

_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader where it is built
_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_AS_TEXT = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"}
_BOMS = (  # UTF-32 first: its little-endian mark begins with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class _Loader(_BASE):
    """A safe loader with the rules above for mappings."""


def _key(loader: Any, node: Any) -> Any:
    if isinstance(node, yaml.ScalarNode) and node.style is None and node.tag in _PLAIN_AS_TEXT:
        return node.value  # `on:` is the key "on", not True
    return loader.construct_object(node, deep=True)


def _construct_mapping(loader: Any, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            continue
        key = _key(loader, key_node)
        try:
            again = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value, not a list or a mapping",
                key_node.start_mark,
            ) from None  # fmt: skip
        if again:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {clip(key)} is given twice", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)  # merged keys first, so the explicit ones override them
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        mapping[_key(loader, key_node)] = loader.construct_object(value_node, deep=True)
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _where(text: str, index: int) -> str:
    """``line L, column C`` of character ``index`` of ``text``."""
    before = text[:index]
    line = before.count("\n") + 1
    return f"line {line}, column {index - (before.rfind(chr(10)) + 1) + 1}"


def _decode(data: bytes, origin: str) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise SpecInvalid(origin, [f"not {encoding} text past byte {exc.start}"]) from None
    if b"\x00" in data:
        at = data.index(b"\x00")
        raise SpecInvalid(
            origin,
            [
                f"not a text file: a NUL byte at byte {at} (a binary file, or UTF-16 without a "
                "byte-order mark): save the spec as UTF-8"
            ],
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8")
        raise SpecInvalid(
            origin,
            [
                f"not UTF-8 text: byte 0x{data[exc.start]:02x} at {_where(good, len(good))}: "
                "save the spec as UTF-8"
            ],
        ) from None


def read_source(source: str | Path) -> tuple[str, str, Path | None]:
    """(text, origin, the file's directory): a Path, or a one-line string naming a .yaml/.yml
    file, is read (at most :data:`MAX_BYTES`); other strings are YAML text."""
    if isinstance(source, Path) or (
        "\n" not in source and source.strip().endswith((".yaml", ".yml"))
    ):
        path = Path(source)
        try:
            with path.open("rb") as file:
                data = file.read(MAX_BYTES + 1)
        except OSError as exc:
            raise SpecInvalid(str(path), [f"cannot read the file: {exc.strerror}"]) from None
        if len(data) > MAX_BYTES:
            raise SpecInvalid(
                str(path), [f"the file is larger than {MAX_BYTES // 1024} KiB: not a spec"]
            )
        return _decode(data, str(path)), str(path), path.resolve().parent
    if len(source) > MAX_BYTES:
        raise SpecInvalid("spec text", [f"longer than {MAX_BYTES // 1024} KiB: not a spec"])
    return source, "spec text", None


def _measure(text: str) -> None:
    """Refuse, from the parser's events alone, a document nested too deep, an alias inside its
    own anchor, or one that expands to more than MAX_NODES values."""
    sizes: dict[str, int] = {}  # anchor -> values it stands for
    open_: list[list[Any]] = []  # the collections being read: [values so far, anchor]
    total = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, AliasEvent):
            if any(anchor == event.anchor for _, anchor in open_):
                name = str(event.anchor)[:40]
                raise _error(event, f"the alias *{name} is inside its own anchor")
            count = sizes.get(str(event.anchor), 1)  # an unknown one: the loader reports it
        elif isinstance(event, CollectionStartEvent):
            if len(open_) >= MAX_DEPTH:
                raise _error(event, f"nested deeper than {MAX_DEPTH} levels")
            open_.append([1, event.anchor])
            count = 1
        elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
            size, anchor = open_.pop()
            if anchor is not None:
                sizes[anchor] = size
            if open_:
                open_[-1][0] += size
            continue
        elif isinstance(event, ScalarEvent):
            count = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        else:
            continue
        total += count
        if open_ and not isinstance(event, CollectionStartEvent):
            open_[-1][0] += count
        if total > MAX_NODES:
            raise _error(
                event,
                f"the document expands to more than {MAX_NODES:,} values (its aliases "
                "repeat what they name): a spec has a few thousand",
            )


def _error(event: Any, what: str) -> yaml.MarkedYAMLError:
    return yaml.MarkedYAMLError(problem=what, problem_mark=event.start_mark)


def load_yaml(text: str, origin: str) -> Any:
    """The document in ``text``, or SpecInvalid with one line naming the place of the problem."""
    try:
        _measure(text)
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        if "maximum nesting depth" in what:  # libyaml's own limit, met first in flow style
            what = f"nested deeper than {MAX_DEPTH} levels"
        problem = f"YAML: {where}{clip_line(what, 200)}"
    except yaml.reader.ReaderError as exc:
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        problem = (
            f"YAML: {_where(text, exc.position)}: the character {character!r} is not allowed in "
            "YAML (a control character): remove it"
        )
    except yaml.YAMLError as exc:
        problem = f"YAML: {clip(str(exc), 200)}"
    raise SpecInvalid(origin, [problem])  # no exception context: it would quote the document
