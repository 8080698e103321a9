"""The config: YAML in, one validated pydantic model out, every fault named by key and line.

- `schema.py`   the sections, their keys, defaults and ranges; names from the registries
- `loading.py`  YAML with line numbers, `--set` overrides, validation; YAML out
- `messages.py` pydantic's errors as one line, with the one "did you mean"
"""

from mlpcli.config.loading import (
    apply_override,
    load_config,
    parse_override,
    parse_yaml,
    to_yaml,
    validate_dict,
)
from mlpcli.config.schema import Config, json_schema, to_dict

__all__ = [
    "Config",
    "apply_override",
    "json_schema",
    "load_config",
    "parse_override",
    "parse_yaml",
    "to_dict",
    "to_yaml",
    "validate_dict",
]
