"""Reading a config: YAML text -> plain dict with each key's line -> `--set` overrides ->
a validated `Config`; and writing a resolved config back as YAML.

The YAML reader is PyYAML's safe loader with two changes: `1e-3` is a number (YAML 1.2)
and a key given twice is an error. A `ConfigError` names the file, the dotted key and the
line; a fault in a `--set` names the override instead.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlpcli.config.messages import _format_errors, key_hint
from mlpcli.config.schema import Config, _field_model, _fields, to_dict
from mlpcli.errors import ConfigError

# ----------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader reading `1e-3` as a number (YAML 1.2) and refusing duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                raise yaml.MarkedYAMLError(
                    problem="a key must be a plain value, not a list or mapping",
                    problem_mark=key_node.start_mark,
                )
            if key in seen:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r} (first on line {seen[key]})",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


# Bounds on what a config may expand to: YAML aliases let a few lines stand for billions of
# values ("billion laughs"), and deep nesting exhausts the parser's recursion.
MAX_BYTES = 1 << 20  # a config file
MAX_VALUES = 100_000  # values after expanding aliases
MAX_DEPTH = 50  # nested mappings and lists


def parse_yaml(text: str, where: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML text; return the data and a map of key paths to 1-based line numbers."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_size(node, where)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply (at most {MAX_DEPTH})") from None
    except (ValueError, TypeError, AttributeError, OverflowError, KeyError) as e:
        # a tagged value PyYAML cannot build (`!!timestamp x`, `!!binary` of bad base64, ...)
        raise ConfigError(f"{where}: invalid YAML value ({e})") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}{line}: invalid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {' '.join(str(e).split())}") from None
    lines: dict[tuple, int] = {}
    if node is not None:
        _collect_lines(node, (), lines)
    return data, lines


def _check_size(root: yaml.Node, where: str) -> None:
    """ConfigError when the document nests deeper than MAX_DEPTH or expands (aliases
    counted as many times as they are used) to more than MAX_VALUES values."""
    sizes: dict[int, int] = {}  # id(node) -> values it expands to, each node counted once

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            line = node.start_mark.line + 1
            raise ConfigError(
                f"{where} line {line}: nested too deeply (at most {MAX_DEPTH} levels)"
            )
        if id(node) in sizes:
            return sizes[id(node)]
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        if total > MAX_VALUES:
            raise ConfigError(
                f"{where} line {node.start_mark.line + 1}: expands to more than {MAX_VALUES:,} "
                "values (YAML aliases); a config needs far fewer"
            )
        sizes[id(node)] = total
        return total

    size(root, 0)


def _collect_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, key_node.value)
            _collect_lines(value_node, key, lines)
            lines[key] = key_node.start_mark.line + 1  # a key's line is where the key is
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_lines(item, (*path, i), lines)


# ----------------------------------------------------------------------------- overrides


def parse_override(item: str) -> tuple[str, Any]:
    """`KEY=VALUE` (VALUE in YAML) -> (dotted key, value)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optimizer.lr=0.01")
    value, _ = parse_yaml(text, f"--set {key}")
    return key, value


def apply_override(raw: dict, key: str, value: Any) -> None:
    """Set dotted `key` in the raw config dict; the key must exist in the schema."""
    parts = key.split(".")
    model: Any = Config
    node: Any = raw
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"--set {key}: {'.'.join(parts[:depth])} has {len(node)} items "
                    f"(indices 0 to {len(node) - 1}), got {part!r}"
                )
            index = int(part)
            if last:
                node[index] = value
                return
            node = node[index]  # `model` stays list[Item]: resolved per item
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:depth])} is not a section")
        fields = _fields(model, node)
        if fields is not None and part not in fields:
            raise ConfigError(f"--set {key}: unknown key {where!r}{key_hint(part, fields)}")
        if last:
            node[part] = value
            return
        model = _field_model(model, node, part)
        if part not in node or node[part] is None:
            node[part] = {}
        node = node[part]


# ----------------------------------------------------------------------------- loading


def load_config(
    path: str | Path,
    overrides: list[str] | None = None,
    options: dict[str, tuple[str, Any]] | None = None,
) -> Config:
    """Read, override and validate a config file.

    `overrides` are `KEY=VALUE` strings (`--set`); `options` maps dotted keys to
    (flag, value) for other command-line options (`{"train.epochs": ("--epochs", 5)}`),
    applied after them when the value is not None.
    """
    path = Path(path)
    where = str(path)
    text = _read_text(path, where)
    raw, lines = parse_yaml(text, where)
    if raw is None:
        raise ConfigError(f"{where}: the file is empty; `mlpcli init` writes a starter config")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} line 1: expected a mapping of keys, got {type(raw).__name__}")
    return validate_dict(
        raw, where=where, lines=lines, stem=path.stem, overrides=overrides, options=options
    )


def _read_text(path: Path, where: str) -> str:
    """A config file's text: a regular file of at most MAX_BYTES, in UTF-8."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{where}: is a directory, not a config file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{where}: not a regular file (a device, pipe or socket)")
        if info.st_size > MAX_BYTES:
            raise ConfigError(f"{where}: {info.st_size:,} bytes; a config is at most 1 MiB")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        return data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read: {e}") from None


def validate_dict(
    raw: dict,
    *,
    where: str = "config",
    lines: dict[tuple, int] | None = None,
    stem: str = "run",
    overrides: list[str] | None = None,
    options: dict[str, tuple[str, Any]] | None = None,
) -> Config:
    """Validate a raw config dict (after applying overrides) into a resolved `Config`."""
    labels: dict[str, str] = {}  # dotted key -> the option that set it
    for item in overrides or []:
        key, value = parse_override(item)
        apply_override(raw, key, value)
        labels[key] = f"--set {key}"
    for key, (flag, value) in (options or {}).items():
        if value is not None:
            apply_override(raw, key, value)
            labels[key] = flag
    try:
        config = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, raw, where, lines or {}, labels)) from None
    if config.name is None:
        config.name = stem
    return config


# ----------------------------------------------------------------------------- output


def to_yaml(config: Config | dict) -> str:
    data = to_dict(config) if isinstance(config, Config) else config
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
