"""torch.optim's option names and defaults, written once.

The config schema takes its optimizer sections' keys and defaults from here, and
`optim.build_optimizer` fills in the options a caller leaves out from here, so the two can
never disagree. No imports: `mlpcli validate` reads this without loading the optimizers.
"""

_ADAM = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}

OPTIMIZER_OPTIONS: dict[str, dict[str, object]] = {
    "sgd": {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0},
    "adam": _ADAM,
    "adamw": {**_ADAM, "weight_decay": 0.01},
    "rmsprop": {
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "momentum": 0.0,
        "centered": False,
    },
    "adagrad": {
        "lr_decay": 0.0,
        "eps": 1e-10,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
    },
}
