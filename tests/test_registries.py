"""The registries are the one list of each kind of name: the config schema accepts every
name they hold, with the defaults they hold, and TensorBoard's graph draws every one, so
adding an activation, loss, initializer, optimizer or schedule is one change in one place."""

from __future__ import annotations

import inspect
import typing

import pytest
from helpers import small_config
from pydantic import BaseModel

from mlpcli.activations import ACTIVATIONS, DERIVATIVES
from mlpcli.config import validate_dict
from mlpcli.config.schema import Config
from mlpcli.initializers import INITS
from mlpcli.losses import FUSED, LOSSES
from mlpcli.optim import OPTIMIZERS
from mlpcli.optim_options import OPTIMIZER_OPTIONS
from mlpcli.schedules import SCHEDULES
from mlpcli.tblog import graph_def


def _models(annotation) -> list:
    """The pydantic models inside an annotation (unions, Optional, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _tag(model) -> str:
    (name,) = typing.get_args(model.model_fields["name"].annotation)
    return name


def _draw(config) -> None:
    layers = config.model.layers
    graph_def(
        [2, *(la.units for la in layers)],
        [la.activation for la in layers],
        config.loss,
        dropouts=[la.dropout for la in layers],
    )


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_is_accepted_and_drawn(name):
    assert name in DERIVATIVES
    if name == "softmax":  # an output activation only
        layers = [{"units": 4, "activation": "relu"}, {"units": 2, "activation": name}]
    else:
        layers = [{"units": 4, "activation": name}, {"units": 2, "activation": "softmax"}]
    config = validate_dict(small_config(model={"layers": layers}))
    assert [la.activation for la in config.model.layers] == [la["activation"] for la in layers]
    _draw(config)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_accepted_and_drawn(name):
    output = {"cross_entropy": 2, "binary_cross_entropy": 1}.get(name, 1)
    layers = [{"units": 4}, {"units": output, "activation": FUSED[name]}]
    config = validate_dict(small_config(loss=name, model={"layers": layers}))
    assert config.loss == name
    _draw(config)


@pytest.mark.parametrize("name", sorted(INITS))
def test_every_initializer_is_accepted(name):
    model = {"init": name, "layers": [{"units": 2}]}
    assert validate_dict(small_config(model=model)).model.init == name


def test_the_schema_offers_exactly_the_optimizers_with_torch_defaults():
    members = {_tag(m): m for m in _models(Config.model_fields["optimizer"].annotation)}
    assert set(members) == set(OPTIMIZERS) == set(OPTIMIZER_OPTIONS)
    for name, model in members.items():
        options = OPTIMIZER_OPTIONS[name]
        assert set(model.model_fields) == {"name", "lr", *options}, name
        for key, default in options.items():
            got = model.model_fields[key].default
            assert (list(got) if isinstance(got, list) else got) == (
                list(default) if isinstance(default, tuple) else default
            ), f"{name}.{key}"
        # the optimizer's constructor takes exactly these options, all keyword-only
        signature = inspect.signature(OPTIMIZERS[name].__init__)
        keywords = {p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY}
        assert keywords == set(options), name
        config = validate_dict(small_config(optimizer={"name": name, "lr": 0.1}))
        assert config.optimizer.name == name


def test_the_schema_offers_exactly_the_schedules():
    members = _models(Config.model_fields["schedule"].annotation)
    assert sorted(_tag(m) for m in members) == sorted(SCHEDULES)
    for name in SCHEDULES:
        schedule = {"name": name, "step_size": 1, "gamma": 0.5}
        schedule = {k: v for k, v in schedule.items() if k in _model(members, name).model_fields}
        assert validate_dict(small_config(schedule=schedule)).schedule.name == name


def _model(members: list, name: str):
    (model,) = [m for m in members if _tag(m) == name]
    return model
