"""Config faults as one line a user can act on: `file: key: problem (line N); ...`.

pydantic's errors are turned into phrases (unknown key, with a "did you mean"; a choice
that is not one of the registry's names; a cross-field fault at its own dotted key), each
placed at the option that set the key (`--set`, `--epochs`) or at its line in the file.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from mlpcli.config.schema import Config, _field_model, _fields, _KeyError
from mlpcli.errors import closest


def did_you_mean(word: Any, choices: Any) -> str:
    """' (did you mean 'x'?)' when a choice is close to `word`, else ''."""
    match = closest(word, choices)
    return f" (did you mean {match!r}?)" if match else ""


# Keys people bring from Keras, PyTorch (Lightning) and scikit-learn's MLPClassifier, with
# the mlpcli key that means the same.
FOREIGN_KEYS = {
    "learning_rate": "optimizer.lr",
    "learning_rate_init": "optimizer.lr",
    "lr_scheduler": "schedule",
    "hidden_layer_sizes": "model.layers (a list of {units: N})",
    "hidden_sizes": "model.layers (a list of {units: N})",
    "max_iter": "train.epochs",
    "max_epochs": "train.epochs",
    "n_epochs": "train.epochs",
    "num_epochs": "train.epochs",
    "epochs": "train.epochs",
    "batch": "train.batch_size",
    "batch_size": "train.batch_size",
    "random_state": "seed",
    "random_seed": "seed",
    "solver": "optimizer.name",
    "alpha": "optimizer.weight_decay",
    "l2": "optimizer.weight_decay",
    "beta_1": "optimizer.betas",
    "beta_2": "optimizer.betas",
    "epsilon": "optimizer.eps",
    "validation_split": "data.val_split",
    "validation_fraction": "data.val_split",
    "n_iter_no_change": "train.early_stopping.patience",
    "clipnorm": "train.clip_grad_norm",
    "gradient_clip_val": "train.clip_grad_norm",
    "loss_function": "loss",
    "criterion": "loss",
    "activation": "model.layers.N.activation",
    "dropout_rate": "model.layers.N.dropout",
    "kernel_initializer": "model.init",
    "log_dir": "logging.logdir",
}


def key_hint(word: Any, fields: Any) -> str:
    """What to say after 'unknown key': a close key of this section, or the mlpcli key
    for a name from another library."""
    close = did_you_mean(word, fields)
    if close or str(word) not in FOREIGN_KEYS:
        return close
    return f" (mlpcli's key for this is {FOREIGN_KEYS[str(word)]})"


def _clean_loc(loc: tuple, raw: Any) -> tuple:
    """Drop pydantic's union-branch labels from an error location, keeping real keys."""
    out: list = []
    node = raw
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        if in_dict or isinstance(node, list) and isinstance(part, int) and part < len(node):
            out.append(part)
            node = node[part]
        elif i == len(loc) - 1 and isinstance(node, dict):
            out.append(part)  # a missing or unknown key
    return tuple(out)


def _describe(error: dict, loc: tuple, raw: Any) -> str:
    """One error as a phrase a user can act on."""
    kind, ctx = error["type"], error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        parent = _fields(_model_at(loc[:-1], raw), _value_at(loc[:-1], raw))
        return "unknown key" + key_hint(loc[-1], parent or [])
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        return f"unknown name {ctx.get('tag')!r}; choose from {', '.join(tags)}" + did_you_mean(
            ctx.get("tag"), tags
        )
    if kind == "union_tag_not_found":
        return "needs a `name`"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(choices)}, got {value!r}" + did_you_mean(value, choices)
    if kind == "value_error":
        err = ctx.get("error")
        if isinstance(err, _KeyError):
            return err.message
        return str(err) if err is not None else error["msg"]
    message = error["msg"].replace("Input should be", "must be").replace("should have", "must have")
    if value is not None and not isinstance(value, dict | list):
        message += f", got {value!r}"
    return message


def _value_at(loc: tuple, raw: Any) -> Any:
    node = raw
    for part in loc:
        node = node[part]
    return node


def _model_at(loc: tuple, raw: Any) -> Any:
    model: Any = Config
    node: Any = raw
    for part in loc:
        if isinstance(node, list):
            node = node[part]
            continue
        model = _field_model(model, node, part)
        node = node[part]
    return model


def _format_errors(
    error: ValidationError, raw: dict, where: str, lines: dict[tuple, int], labels: dict[str, str]
) -> str:
    """All validation errors of a config as one line: `file: key: problem (line N); ...`."""
    seen: dict[tuple, list[str]] = {}
    across: set[tuple] = set()  # faults of a combination of keys, not of one key alone
    for e in error.errors():
        loc = _clean_loc(tuple(e["loc"]), raw)
        err = (e.get("ctx") or {}).get("error")
        if isinstance(err, _KeyError):
            loc = tuple(int(p) if p.isdigit() else p for p in err.key.split("."))
            across.add(loc)
        elif e["type"].startswith("union_tag"):
            loc = (*loc, "name")  # the fault is the section's `name`, not the section
        phrase = _describe(e, loc, raw)
        if phrase not in seen.setdefault(loc, []):
            seen[loc].append(phrase)
    parts = []
    for loc, phrases in seen.items():
        key = ".".join(map(str, loc)) or "(top level)"
        text = " or ".join(phrases)
        setter = next((k for k in labels if key == k or key.startswith(k + ".")), None)
        if setter is not None:
            parts.append(
                f"{labels[setter]}: {text}" if setter == key else f"{labels[setter]}: {key}: {text}"
            )
            continue
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
        if loc in across and labels:  # the file's key clashes with what the options set
            text += f" (after {', '.join(labels.values())})"
        parts.append(f"{where}: {key}: {text}" + (f" (line {line})" if line else ""))
    return "; ".join(parts)
