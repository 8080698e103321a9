"""Per-class loss weights: `train.class_weight` resolved against the training labels.

`balanced` weights class c by n_train / (n_classes × count_c), as scikit-learn's
`compute_class_weight("balanced")`; a mapping gives labels as they appear in the training
data (a YAML number or string) their weight, and every other class weight 1. The result,
one float64 per class in the order of `classes`, is what the loss takes as torch's
`weight=` and what a checkpoint keeps as `data/class_weight`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlpcli.errors import ConfigError

KEY = "train.class_weight"


def class_weights(
    spec: Any, classes: np.ndarray, y_train: np.ndarray, where: str
) -> np.ndarray | None:
    """(C,) float64 weights of a config's class_weight (None: unweighted).

    `classes`: the sorted labels; `y_train`: the training rows' class indices (n,);
    `where`: the config file, for messages.
    """
    if spec is None:
        return None
    n_classes = len(classes)
    if spec == "balanced":
        counts = np.bincount(y_train, minlength=n_classes)
        if (counts == 0).any():
            missing = classes[int(np.argmin(counts))].item()
            raise ConfigError(
                f"{where}: {KEY}: balanced weights need every class in the training split; "
                f"class {missing!r} has no training sample"
            )
        return len(y_train) / (n_classes * counts.astype(np.float64))
    weights = np.ones(n_classes)
    seen: dict[int, Any] = {}
    for label, weight in spec.items():
        index = _class_index(label, classes)
        if index is None:
            shown = ", ".join(repr(c) for c in classes[:10].tolist())
            more = ", ..." if n_classes > 10 else ""
            raise ConfigError(
                f"{where}: {KEY}.{label}: no class {label!r} in the training data "
                f"(classes: {shown}{more})"
            )
        if index in seen:
            raise ConfigError(
                f"{where}: {KEY}.{label}: names class {classes[index].item()!r} a second time "
                f"(as {seen[index]!r} and {label!r})"
            )
        seen[index] = label
        weights[index] = weight
    return weights


def _class_index(label: Any, classes: np.ndarray) -> int | None:
    """The index of `label` in `classes`, or None. Numeric labels may come as strings (a
    checkpoint's config is JSON, whose keys are strings): "2" finds class 2."""
    if classes.dtype.kind == "U":
        value: Any = str(label)
    else:
        try:
            value = float(label)
        except ValueError:
            return None
    found = np.flatnonzero(classes == value)
    return int(found[0]) if len(found) else None
