"""The config's schema: pydantic models of every section, with their defaults and ranges.

Unknown keys are errors and values are not coerced from strings. The choices of names
come from the registries that implement them (ACTIVATIONS, LOSSES, INITS, the optimizers'
options, SCHEDULES), so a name added there is a name the config accepts. `Config._resolve`
holds the checks that span sections and the defaults that depend on other keys.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlpcli.activations import ACTIVATIONS
from mlpcli.errors import closest
from mlpcli.initializers import INITS
from mlpcli.losses import LOSSES
from mlpcli.optim_options import OPTIMIZER_OPTIONS as _TORCH
from mlpcli.paths import run_name_problem

ACTIVATION_NAMES = tuple(ACTIVATIONS)
INIT_NAMES = tuple(INITS)
LOSS_NAMES = tuple(LOSSES)
MONITORS = (
    *("val/loss", "val/accuracy", "train/loss", "train/accuracy"),
    *("val/f1_macro", "val/auc", "val/mae", "val/r2"),
)
# Monitors by the models that have them, and those better when larger (mode: max).
CLASSIFICATION_MONITORS = ("val/accuracy", "train/accuracy", "val/f1_macro", "val/auc")
REGRESSION_MONITORS = ("val/mae", "val/r2")
MAXIMIZED = ("val/accuracy", "train/accuracy", "val/f1_macro", "val/auc", "val/r2")
# Measured on the validation data only: no train/ value to fall back to without it.
VALIDATION_ONLY = ("val/f1_macro", "val/auc", "val/mae", "val/r2")

# Integers are bounded so that every value fits the int64 of NumPy, JSON readers and
# TensorBoard; floats must be finite (`allow_inf_nan=False` on every section).
MAX_INT = 2**31 - 1
Count = Annotated[int, Field(gt=0, le=MAX_INT)]  # a positive count: epochs, units, ...
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction01 = Annotated[float, Field(ge=0, lt=1)]
# a class label as the training data spells it (a YAML number or string) -> its weight
ClassWeights = dict[Annotated[str, Field(min_length=1)] | int | float, Positive]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are not coerced from strings."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------- data


class ValData(Section):
    """A separate validation source, read like `data`."""

    source: str
    options: dict[str, Any] = {}
    target: str | list[str] | None = None
    features: str | list[str] | None = None


class Data(Section):
    source: str
    options: dict[str, Any] = {}
    target: str | list[str] | None = None
    features: str | list[str] | None = None
    val_split: Fraction01 | None = None  # resolved: 0.2, or 0 when `val` is given
    val: ValData | None = None
    standardize: bool = True
    standardize_target: bool = False
    # CSV feature columns to one-hot encode: "auto" (the columns holding no number), or names
    categorical: Literal["auto"] | list[str] = "auto"
    missing: Literal["error", "mean", "median", "zero"] = "error"  # empty numeric CSV cells

    @field_validator("categorical")
    @classmethod
    def _distinct(cls, names: str | list[str]) -> str | list[str]:
        if isinstance(names, list):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"lists {twice[0]!r} twice")
        return names

    # batches host -> device per step instead of the data on the device whole (feed.py);
    # auto: on a GPU, for memory-mapped data or data over half the device's free memory
    stream: Literal["auto"] | bool = "auto"

    @field_validator("stream", mode="before")
    @classmethod
    def _stream(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, str) and value == "auto"):
            return value
        raise ValueError(f"must be auto, true or false, got {value!r}")


# ----------------------------------------------------------------------------- model


class Layer(Section):
    units: Count
    activation: Literal[ACTIVATION_NAMES] | None = None  # resolved from the loss / position
    dropout: Fraction01 = 0.0


class Model(Section):
    init: Literal[INIT_NAMES] = "he_normal"
    init_from: str | None = None
    layers: Annotated[list[Layer], Field(min_length=1)]


# ----------------------------------------------------------------------------- optimizers
# Option names and defaults are torch.optim's, from optim_options.OPTIMIZER_OPTIONS.


class SGD(Section):
    name: Literal["sgd"]
    lr: Positive
    momentum: NonNegative = _TORCH["sgd"]["momentum"]
    dampening: NonNegative = _TORCH["sgd"]["dampening"]
    nesterov: bool = _TORCH["sgd"]["nesterov"]
    weight_decay: NonNegative = _TORCH["sgd"]["weight_decay"]

    @model_validator(mode="after")
    def _nesterov(self) -> SGD:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise _KeyError("optimizer.nesterov", "needs momentum > 0 and dampening 0")
        return self


class Adam(Section):
    name: Literal["adam"]
    lr: Positive
    betas: Annotated[list[Fraction01], Field(min_length=2, max_length=2)] = list(
        _TORCH["adam"]["betas"]
    )
    eps: Positive = _TORCH["adam"]["eps"]
    weight_decay: NonNegative = _TORCH["adam"]["weight_decay"]
    amsgrad: bool = _TORCH["adam"]["amsgrad"]


class AdamW(Adam):
    name: Literal["adamw"]  # type: ignore[assignment]
    weight_decay: NonNegative = _TORCH["adamw"]["weight_decay"]


class RMSprop(Section):
    name: Literal["rmsprop"]
    lr: Positive
    alpha: Fraction01 = _TORCH["rmsprop"]["alpha"]
    eps: Positive = _TORCH["rmsprop"]["eps"]
    weight_decay: NonNegative = _TORCH["rmsprop"]["weight_decay"]
    momentum: NonNegative = _TORCH["rmsprop"]["momentum"]
    centered: bool = _TORCH["rmsprop"]["centered"]


class Adagrad(Section):
    name: Literal["adagrad"]
    lr: Positive
    lr_decay: NonNegative = _TORCH["adagrad"]["lr_decay"]
    eps: Positive = _TORCH["adagrad"]["eps"]
    weight_decay: NonNegative = _TORCH["adagrad"]["weight_decay"]
    initial_accumulator_value: NonNegative = _TORCH["adagrad"]["initial_accumulator_value"]


Optimizer = Annotated[SGD | Adam | AdamW | RMSprop | Adagrad, Field(discriminator="name")]

# ----------------------------------------------------------------------------- schedules


class StepSchedule(Section):
    name: Literal["step"]
    step_size: Count
    gamma: Positive = 0.1
    warmup_epochs: NonNegative = 0.0


class ExponentialSchedule(Section):
    name: Literal["exponential"]
    gamma: Positive
    warmup_epochs: NonNegative = 0.0


class CosineSchedule(Section):
    name: Literal["cosine"]
    epochs: Count | None = None  # resolved: train.epochs at the start
    min_lr: NonNegative = 0.0
    warmup_epochs: NonNegative = 0.0


Schedule = Annotated[
    StepSchedule | ExponentialSchedule | CosineSchedule, Field(discriminator="name")
]

# ----------------------------------------------------------------------------- training


class EarlyStopping(Section):
    monitor: Literal[MONITORS] = "val/loss"
    patience: Count = 5
    mode: Literal["min", "max"] | None = None  # resolved: max for accuracy, else min
    min_delta: NonNegative = 0.0


class Train(Section):
    epochs: Count = 20
    batch_size: Count = 64
    shuffle: bool = True
    clip_grad_norm: Positive | None = None
    # classification: per-class loss weights (as torch's `weight=`); labels not listed get 1
    class_weight: Literal["balanced"] | ClassWeights | None = None
    early_stopping: EarlyStopping | None = None

    @field_validator("class_weight", mode="wrap")
    @classmethod
    def _class_weight(cls, value: Any, handler: Any) -> Any:
        """One plain message per fault, instead of one per member of the union."""
        key = "train.class_weight"
        if isinstance(value, dict):
            for label, weight in value.items():
                if isinstance(label, bool) or not isinstance(label, str | int | float):
                    raise _KeyError(f"{key}.{label}", "a label is a number or a string")
                if isinstance(label, str) and not label.strip():
                    raise _KeyError(key, f"a label is a number or a string, got {label!r}")
                number = isinstance(weight, int | float) and not isinstance(weight, bool)
                if not number or not math.isfinite(weight) or weight <= 0:
                    raise _KeyError(f"{key}.{label}", f"must be a number > 0, got {weight!r}")
        elif value is not None and value != "balanced":
            hint = " (did you mean 'balanced'?)" if closest(value, ["balanced"]) else ""
            raise _KeyError(
                key, f"must be balanced or a mapping {{label: weight}}, got {value!r}{hint}"
            )
        return handler(value)


class Logging(Section):
    logdir: str = "logs"
    every_n_steps: Count = 10
    histograms: bool = False
    images_every_n_epochs: Annotated[int, Field(ge=0, le=MAX_INT)] = (
        5  # 2-D classification only; 0: off
    )
    graph: bool = True


class Checkpoint(Section):
    every_n_epochs: Count = 1
    keep_last: Annotated[int, Field(ge=0, le=MAX_INT)] = 3
    save_best: bool = True
    monitor: Literal[MONITORS] = "val/loss"
    mode: Literal["min", "max"] | None = None  # resolved like early_stopping.mode


class Config(Section):
    name: str | None = None  # resolved: the config file's stem; one plain folder name
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    data: Data
    model: Model
    loss: Literal[LOSS_NAMES] = "cross_entropy"
    optimizer: Optimizer = Adam(name="adam", lr=0.001)
    schedule: Schedule | None = None
    train: Train = Train()
    logging: Logging = Logging()
    checkpoint: Checkpoint = Checkpoint()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        problem = run_name_problem(name) if name is not None else None
        if problem:
            raise ValueError(problem)
        return name

    @property
    def task(self) -> str:
        return "regression" if self.loss == "mse" else "classification"

    @model_validator(mode="after")
    def _resolve(self) -> Config:
        """Cross-field checks, and defaults that depend on other keys."""
        layers = self.model.layers
        last = len(layers) - 1
        for i, layer in enumerate(layers):
            if layer.activation is None:
                default = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}
                layer.activation = default.get(self.loss, "linear") if i == last else "relu"
            if layer.activation == "softmax" and i != last:
                raise _KeyError(f"model.layers.{i}.activation", "softmax is for the output layer")
        if layers[last].dropout:
            raise _KeyError(f"model.layers.{last}.dropout", "the output layer takes no dropout")
        out = layers[last]
        want = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(self.loss)
        if want and out.activation != want:
            raise _KeyError(
                f"model.layers.{last}.activation",
                f"loss {self.loss} needs a {want} output layer, got {out.activation}",
            )
        if self.loss == "mse" and out.activation == "softmax":
            raise _KeyError(f"model.layers.{last}.activation", "mse needs a non-softmax output")
        if self.loss == "binary_cross_entropy" and out.units != 1:
            raise _KeyError(
                f"model.layers.{last}.units",
                f"binary_cross_entropy needs 1 output unit, got {out.units}",
            )
        if self.loss == "cross_entropy" and out.units < 2:
            raise _KeyError(f"model.layers.{last}.units", "cross_entropy needs >= 2 output units")

        if self.data.val_split is None:
            self.data.val_split = 0.0 if self.data.val is not None else 0.2
        elif self.data.val is not None and self.data.val_split != 0:
            raise _KeyError("data.val_split", "must be 0 (or absent) when data.val is given")
        if self.data.standardize_target and self.task != "regression":
            raise _KeyError("data.standardize_target", "is for regression (loss: mse) only")

        if isinstance(self.schedule, CosineSchedule) and self.schedule.epochs is None:
            self.schedule.epochs = self.train.epochs
        if self.train.class_weight is not None and self.task == "regression":
            raise _KeyError("train.class_weight", "is for classification, not loss: mse")
        for section, key in (
            (self.train.early_stopping, "train.early_stopping"),
            (self.checkpoint, "checkpoint"),
        ):
            if section is None:
                continue
            self._check_monitor(section.monitor, f"{key}.monitor")
            if section.mode is None:
                section.mode = "max" if section.monitor in MAXIMIZED else "min"
        return self

    def _check_monitor(self, monitor: str, key: str) -> None:
        """A monitor the model and data will have (a ValueError at `key` otherwise)."""
        name = monitor.split("/")[1]
        if self.task == "regression" and monitor in CLASSIFICATION_MONITORS:
            raise _KeyError(key, f"{name} is for classification; regression has val/mae, val/r2")
        if self.task == "classification" and monitor in REGRESSION_MONITORS:
            raise _KeyError(key, f"{name} is for regression; classification has val/f1_macro")
        out = self.model.layers[-1]
        binary = self.loss == "binary_cross_entropy" or out.units == 2
        if monitor == "val/auc" and not binary:
            raise _KeyError(key, f"auc is for binary models; this one has {out.units} classes")
        no_val = self.data.val is None and not self.data.val_split
        if monitor in VALIDATION_ONLY and no_val:
            raise _KeyError(
                key, f"{name} is measured on validation data; set data.val_split or data.val"
            )


class _KeyError(ValueError):
    """A cross-field fault at a dotted key (pydantic reports it at the root otherwise)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


# ----------------------------------------------------------------------------- introspection
# Which model class describes a raw section, for `--set` and for "did you mean".


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    """The BaseModel classes inside an annotation (unions, Annotated, list[...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or getattr(annotation, "__metadata__", ()):
        found += _union_members(arg)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and not found:
        found += _union_members(origin)
    return found


def _resolve_model(model: Any, node: Any) -> type[BaseModel] | None:
    """The model class that describes `node`: picks the union member by its `name` tag."""
    members = _union_members(model) if not isinstance(model, type) else [model]
    members = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(members) > 1 and isinstance(node, dict):
        for m in members:
            tag = m.model_fields.get("name")
            if tag is not None and node.get("name") in getattr(tag.annotation, "__args__", ()):
                return m
        return None  # unknown tag: any key may be fine; validation will say
    return members[0] if members else None


def _fields(model: Any, node: Any) -> list[str] | None:
    resolved = _resolve_model(model, node)
    return list(resolved.model_fields) if resolved is not None else None


def _field_model(model: Any, node: Any, part: str) -> Any:
    """The annotation of field `part` of the section `node` (a list's stays its item's)."""
    resolved = _resolve_model(model, node)
    if resolved is None or part not in resolved.model_fields:
        return None
    return resolved.model_fields[part].annotation


# ----------------------------------------------------------------------------- output


def to_dict(config: Config) -> dict:
    """The resolved config as plain data (JSON/YAML-safe)."""
    return config.model_dump(mode="json")


def json_schema() -> dict:
    """The config's JSON Schema, for editors' YAML support."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mlpcli config"
    return schema
