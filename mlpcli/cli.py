"""The command line: parses arguments, calls the library, prints. No math, no file formats.

Every user mistake arrives here as an MlpcliError and leaves as one `error:` line on
stderr with exit code 2. Heavy modules (NumPy, pydantic, tensorboardX) are imported
inside the commands, so `mlpcli --help` starts fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="mlpcli",
    help="Train multilayer perceptrons from YAML configs, with TensorBoard logs and "
    "exactly resumable .npz checkpoints.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigArg = Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config key: --set optimizer.lr=0.01 (YAML value; repeatable)."
    ),
]


def _err(message: str) -> None:
    """One `error:` line: control characters a user's input may carry (a newline in a key
    or a file name) are shown escaped, never breaking the line."""
    line = "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in message)
    print(f"error: {line}", file=sys.stderr)


def _version(value: bool) -> None:
    if value:
        from mlpcli import __version__

        print(f"mlpcli {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Train multilayer perceptrons from YAML configs, with TensorBoard logs and exactly
    resumable .npz checkpoints."""


@app.command()
def train(
    config: ConfigArg,
    set_: SetOpt = None,
    logdir: Annotated[str | None, typer.Option(help="Log folder (logging.logdir).")] = None,
    name: Annotated[
        str | None, typer.Option(help="Run folder name (default: NAME-YYYYmmdd-HHMMSS).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (train.epochs).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (seed).")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the run folder.")
    ] = False,
) -> None:
    """Train a new run."""
    from mlpcli import runs
    from mlpcli.report import reporter_for

    options = {
        "train.epochs": ("--epochs", epochs),
        "seed": ("--seed", seed),
        "logging.logdir": ("--logdir", logdir),
        "device": ("--device", device),
    }
    runs.train(config, reporter_for(quiet), overrides=set_, options=options, name=name)


CheckpointArg = Annotated[
    Path,
    typer.Argument(
        help="A checkpoint (.npz), or a run folder: its best.npz (resume: its last.npz).",
        show_default=False,
    ),
]


@app.command()
def resume(
    checkpoint: CheckpointArg,
    epochs: Annotated[
        int | None, typer.Option(help="The new total number of epochs (train.epochs).")
    ] = None,
    set_: SetOpt = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the run folder.")
    ] = False,
) -> None:
    """Continue a run from a checkpoint, exactly, in its own run folder."""
    from mlpcli import runs
    from mlpcli.report import reporter_for

    runs.resume(checkpoint, reporter_for(quiet), epochs=epochs, overrides=set_, device=device)


@app.command("eval")
def eval_(
    checkpoint: CheckpointArg,
    data: Annotated[
        str | None,
        typer.Option(help="Evaluate on this source (a file or built-in dataset) instead."),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="With --data: the label column / key / file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Metrics of a checkpoint on its validation data, or on other data."""
    import json

    from mlpcli import inference

    loaded = inference.load(checkpoint)
    result = inference.evaluate(loaded, data, target)
    if result["warning"]:
        print(f"warning: {result['warning']}", file=sys.stderr)
    if as_json:  # strict JSON: a metric that is not a finite number is null
        finite = {k: v if _finite(v) else None for k, v in result["metrics"].items()}
        print(json.dumps(finite, allow_nan=False))
        return
    print(f"{checkpoint} on {result['data']}:")
    units = {}  # a regression's loss is on the scale the model was trained on
    if loaded.config.task == "regression":
        scaled = loaded.config.data.standardize_target
        units["loss"] = (
            " (standardized target units)" if scaled else " (the target's units, squared)"
        )
    for key, value in result["metrics"].items():
        text = f"{value:.6g}" if isinstance(value, float) else f"{value}"
        print(f"  {key:<10} {text}{units.get(key, '')}")


def _finite(value: object) -> bool:
    import math

    return not isinstance(value, float) or math.isfinite(value)


@app.command()
def predict(
    checkpoint: CheckpointArg,
    input: Annotated[Path, typer.Argument(help="Features: a CSV or .npy file.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the CSV here, not to stdout.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
    proba: Annotated[bool, typer.Option(help="Add a probability column per class.")] = False,
) -> None:
    """Predictions for a CSV / NPY file, in the original labels and units."""
    import io

    from mlpcli import inference, paths

    if output is not None:  # checked before any work, so a refusal costs nothing
        output = paths.output_file(output, flag="--output", inputs=[checkpoint, input], force=force)
    names, columns = inference.predict(inference.load(checkpoint), str(input), proba, warn=_warn)
    if output is None:
        inference.write_csv(names, columns, sys.stdout)
        return
    buffer = io.StringIO()  # everything is computed before the output file is touched
    inference.write_csv(names, columns, buffer)
    paths.write_text(output, buffer.getvalue(), "--output")
    print(f"wrote {len(columns[0])} predictions to {output}")


@app.command()
def inspect(
    checkpoint: CheckpointArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """What a checkpoint holds: epoch, step, metrics, config, parameter shapes."""
    import json

    from mlpcli import inference

    info = inference.summary(inference.load(checkpoint))
    if as_json:
        print(json.dumps(info))
        return
    cfg = info["config"]
    layers = " -> ".join(f"{la['units']} {la['activation']}" for la in cfg["model"]["layers"])
    print(f"{info['path']}: mlpcli checkpoint v{info['version']}")
    print(f"  run        {cfg['name']}, seed {cfg['seed']}, {cfg['dtype']}")
    print(f"  progress   epoch {info['epoch']}, step {info['step']}")
    print(f"  model      {layers}; loss {cfg['loss']}, optimizer {cfg['optimizer']['name']}")
    print(f"  data       {cfg['data']['source']} ({info['task']})")
    if info["feature_names"]:  # what a `predict` CSV must hold, by name
        print(f"  inputs     {_listing(info['feature_names'])}")
    for column, vocabulary in info["categories"].items():  # one 0/1 input per category
        shown = [c if c else "(missing)" for c in vocabulary]
        print(f"  one-hot    {column}: {_listing(shown)}")
    if info["fill"]:
        filled = [f"{column} {value:.6g}" for column, value in info["fill"].items()]
        print(f"  fill       {cfg['data']['missing']}: {_listing(filled)}")
    if info["classes"] is not None:
        print(f"  classes    {_listing(info['classes'])}")
    if info["class_weight"]:
        weights = [f"{label} {w:.6g}" for label, w in info["class_weight"].items()]
        print(f"  weights    {_listing(weights)}")
    width = max([10, *(len(k) for k in info["metrics"])])
    for key, value in info["metrics"].items():
        print(f"  {key:<{width}} {value:.6g}")
    arrays = {**info["params"], **info["arrays"]}
    width = max([28, *(len(k) for k in arrays)])
    for key, shape in arrays.items():
        print(f"  {key:<{width}} {tuple(shape)}")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _listing(items: list, limit: int = 12) -> str:
    """'a, b, c' (the first `limit`, then how many in all)."""
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


@app.command()
def validate(
    config: ConfigArg,
    set_: SetOpt = None,
) -> None:
    """Check a config and its data without training; print the resolved config."""
    from mlpcli.config import load_config, to_yaml
    from mlpcli.data import prepare

    cfg = load_config(config, set_)
    data = prepare(cfg, str(config))
    print(to_yaml(cfg), end="")
    from mlpcli.data.preprocess import unseen_warning

    n_val = 0 if data.x_val is None else data.x_val.shape[0]
    kind = f"{len(data.classes)} classes" if data.classes is not None else "regression"
    columns = ""
    if data.encoding is not None:  # CSV columns encoded: one input per category
        columns = f" (from {len(data.encoding.names)} columns, "
        columns += f"{len(data.encoding.categories)} categorical)"
    print(
        f"# ok: {data.source}: {data.n_train} train / {n_val} validation samples, "
        f"{data.x_train.shape[1]} features{columns}, {kind}"
    )
    unseen = unseen_warning(data.unseen, "the validation data")
    if unseen:
        _warn(unseen)


@app.command()
def gradcheck(
    config: ConfigArg,
    set_: SetOpt = None,
    samples: Annotated[int, typer.Option(min=1, help="Training samples in the batch.")] = 8,
    eps: Annotated[float, typer.Option(help="Finite-difference step (> 0).")] = 1e-6,
    max_entries: Annotated[
        int, typer.Option(min=1, help="Entries checked per parameter (a seeded sample).")
    ] = 64,
    tol: Annotated[float, typer.Option(min=0, help="Largest relative error that passes.")] = 1e-6,
) -> int:
    """Compare backprop with finite differences (float64); exit 1 when it fails."""
    import math

    from mlpcli.errors import MlpcliError

    if not (eps > 0 and math.isfinite(eps)):
        raise MlpcliError(f"--eps: must be a positive number, got {eps}")
    from mlpcli.config import load_config
    from mlpcli.data import prepare
    from mlpcli.gradcheck import check_config

    cfg = load_config(config, set_, {"dtype": ("gradcheck", "float64")})
    data = prepare(cfg, str(config))
    results = check_config(cfg, data, samples, eps, max_entries)
    dropout = any(layer.dropout for layer in cfg.model.layers)
    print(
        f"gradient check of {config}: float64, {min(samples, data.n_train)} samples, eps {eps:g}"
        + ("; dropout is off during the check" if dropout else "")
    )
    print(
        f"{'parameter':<12}{'shape':>14}{'checked':>9}{'max abs err':>14}{'rel err':>11}"
        f"{'worst at':>12}  "
    )
    failed = [r for r in results if not r.passed(tol)]
    for r in results:
        mark = "ok" if r.passed(tol) else "FAIL"
        print(
            f"{r.name:<12}{str(r.shape):>14}{r.checked:>9}{r.max_abs:>14.3e}"
            f"{r.rel:>11.2e}{str(r.worst):>12}  {mark}"
        )
    if failed:
        names = ", ".join(r.name for r in failed)
        print(
            f"error: backprop disagrees with finite differences for {names} "
            f"(relative error above {tol:g})",
            file=sys.stderr,
        )
        return 1
    print(f"ok: every gradient agrees to {tol:g} relative")
    return 0


@app.command()
def init(
    template: Annotated[
        str, typer.Argument(help="Template: classification, regression or csv.")
    ] = "classification",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config."""
    from mlpcli.templates import read_template

    text = read_template(template)
    if output is None:
        print(text, end="")
        return
    from mlpcli import paths

    paths.write_text(paths.output_file(output, flag="--output", force=force), text, "--output")
    print(f"wrote {output}; train it with: mlpcli train {output}")


@app.command()
def datasets() -> None:
    """List the built-in datasets and their options."""
    from rich.console import Console
    from rich.table import Table

    from mlpcli.data import describe_datasets

    table = Table(box=None, show_lines=False)
    for column in ("dataset", "task", "options (default)", "description"):
        table.add_column(column)
    for d in describe_datasets():
        options = ", ".join(f"{o['name']}={o['default']}" for o in d["options"])
        table.add_row(d["name"], d["task"], options, d["description"])
    Console(soft_wrap=True).print(table)


@app.command()
def schema() -> None:
    """Print the config's JSON Schema (for editors' YAML support)."""
    import json

    from mlpcli.config import json_schema

    print(json.dumps(json_schema(), indent=2))


@app.command()
def sweep(
    config: Annotated[
        Path | None, typer.Argument(help="The YAML config file.", show_default=False)
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            help="A key as --set takes it and a YAML list of its values: "
            "--grid optimizer.lr=[0.1,0.01] (repeatable; trials are their product).",
        ),
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="Train N combinations drawn with the config's seed.")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", "-j", help="Trials trained at a time (1; with --resume, as the sweep began)."
        ),
    ] = None,
    logdir: Annotated[str | None, typer.Option(help="Log folder (logging.logdir).")] = None,
    name: Annotated[
        str | None, typer.Option(help="Sweep folder name (default: NAME-YYYYmmdd-HHMMSS).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Finish the interrupted sweep in this folder."),
    ] = None,
) -> None:
    """Train one run per combination of a grid of hyperparameters, J at a time."""
    from mlpcli import sweep as sweeps
    from mlpcli.errors import MlpcliError
    from mlpcli.sweepview import view_for

    if resume is not None:
        given = [
            f
            for f, v in (
                ("CONFIG", config),
                ("--grid", grid),
                ("--samples", samples),
                ("--logdir", logdir),
                ("--name", name),
            )
            if v
        ]
        if given:
            raise MlpcliError(
                f"--resume: takes the sweep folder alone (and --jobs), not {', '.join(given)}"
            )
        sweeps.resume(resume, view_for(), jobs=jobs)
        return
    if config is None:
        raise MlpcliError("sweep: give a CONFIG and --grid KEY=[V1,V2,...], or --resume DIR")
    sweeps.start(
        config,
        grid or [],
        view_for(),
        samples=samples,
        jobs=1 if jobs is None else jobs,
        logdir=logdir,
        name=name,
    )


def _is_usage_error(e: BaseException) -> bool:
    """Click's UsageError, whether Typer uses click or its own vendored copy of it."""
    return any(c.__name__ == "UsageError" for c in type(e).__mro__)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one `error:` line."""
    from mlpcli.errors import Interrupted, MlpcliError

    if argv is None:  # the mlpcli program itself, not a caller in Python
        from mlpcli.stopping import process_ends_with_command

        process_ends_with_command()
    import warnings

    try:
        with warnings.catch_warnings():  # stderr holds `error:` and `warning:` lines only;
            warnings.simplefilter("ignore")  # what matters (a NaN, an inf) is checked
            code = app(args=argv, prog_name="mlpcli", standalone_mode=False)
    except MlpcliError as e:
        from mlpcli import distributed  # NumPy: only once something has gone wrong

        if distributed.first_process():
            _err(str(e))
        code = e.exit_code
        if not isinstance(e, Interrupted):  # every process stops at the same step
            distributed.end_job(code, message=str(e))
    except Exception as e:
        from mlpcli import distributed

        if not _is_usage_error(e):
            distributed.end_job(1, e)
            raise
        ctx = getattr(e, "ctx", None)
        command = ctx.command_path if ctx is not None else "mlpcli"
        if distributed.first_process():  # every process parsed the same arguments
            _err(f"{command}: {e.format_message()} (see {command} --help)")
        code = 2
    except KeyboardInterrupt:
        code = 130
    if argv is None:  # about to exit: a late Ctrl-C must not interrupt the exit handlers
        import signal  # (tensorboardX closes its files there) with a traceback

        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
    sys.exit(code if isinstance(code, int) else 0)
