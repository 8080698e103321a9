"""mlpcli against scikit-learn on a real table with categorical and missing columns.

    python benchmarks/tabular.py              # 10 seeds (about a minute on 2 cores)
    python benchmarks/tabular.py --seeds 3

The table is the `cars` data set the vega_datasets package ships (no download), exported
to CSV exactly as README's "Tabular data" says; the config is configs/cars.yaml (classify
Origin). For each seed, both learners get the same training and held-out rows (mlpcli's
seeded `val_split`) and the same preprocessing, each fitted on the training rows only:
median imputation and standardization of the numeric columns, one-hot encoding of the
categorical ones (scikit-learn: `SimpleImputer` + `StandardScaler`, `OneHotEncoder(
handle_unknown="ignore")` in a `ColumnTransformer`), and an MLP of the same hidden sizes,
optimizer, learning rate, batch size and number of epochs (`MLPClassifier`, no L2 penalty,
no early stop). Printed: each seed's held-out accuracy after the last epoch, and the means.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlpcli import runs  # noqa: E402
from mlpcli.config import load_config  # noqa: E402
from mlpcli.data.load import split_rows  # noqa: E402
from mlpcli.report import SilentReporter  # noqa: E402

CONFIG = ROOT / "configs" / "cars.yaml"


def export_cars(folder: Path) -> Path:
    """The README's one-line export, into `folder`."""
    from vega_datasets import data

    path = folder / "cars.csv"
    data.cars().to_csv(path, index=False)
    return path


def mlpcli_accuracy(csv: Path, seed: int, logdir: Path) -> float:
    """Held-out accuracy of mlpcli after the config's last epoch (`mlpcli train`'s path)."""
    progress = runs.train(
        CONFIG,
        SilentReporter(),
        overrides=[f"data.source={csv}", f"seed={seed}", f"logging.logdir={logdir}"],
        name=f"seed-{seed}",
    )
    return progress.metrics["val/accuracy"]


def sklearn_accuracy(csv: Path, seed: int) -> float:
    """Held-out accuracy of the scikit-learn pipeline on the same rows."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.impute import SimpleImputer
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    config = load_config(CONFIG)
    d = config.data
    table = pd.read_csv(csv, keep_default_na=False, na_values=[""], dtype={"Year": str})
    x, y = table[d.features], table[d.target].to_numpy()
    # the columns `categorical: auto` finds: no cell of them is a number
    categorical = [c for c in d.features if not pd.api.types.is_numeric_dtype(table[c])]
    numeric = [c for c in d.features if c not in categorical]
    val_rows, train_rows = split_rows(len(table), d.val_split, seed)
    pipeline = make_pipeline(
        ColumnTransformer(
            [
                (
                    "num",
                    make_pipeline(SimpleImputer(strategy=d.missing), StandardScaler()),
                    numeric,
                ),
                ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
            ]
        ),
        MLPClassifier(
            hidden_layer_sizes=[la.units for la in config.model.layers[:-1]],
            activation="relu",
            solver="adam",
            alpha=0.0,
            learning_rate_init=config.optimizer.lr,
            batch_size=config.train.batch_size,
            max_iter=config.train.epochs,
            n_iter_no_change=config.train.epochs + 1,
            tol=0.0,
            random_state=seed,
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # it ran all its epochs: wanted
        pipeline.fit(x.iloc[train_rows], y[train_rows])
    return float(pipeline.score(x.iloc[val_rows], y[val_rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds (splits and inits)")
    args = parser.parse_args()
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        csv = export_cars(Path(tmp))
        print(f"{CONFIG.relative_to(ROOT)} on vega_datasets' cars, held-out accuracy")
        print(f"{'seed':>4}  {'mlpcli':>7}  {'sklearn':>7}")
        for seed in range(args.seeds):
            ours.append(mlpcli_accuracy(csv, seed, Path(tmp) / "logs"))
            theirs.append(sklearn_accuracy(csv, seed))
            print(f"{seed:>4}  {ours[-1]:7.4f}  {theirs[-1]:7.4f}")
    mean_ours, mean_theirs = statistics.mean(ours), statistics.mean(theirs)
    print(f"mean  {mean_ours:7.4f}  {mean_theirs:7.4f}")
    print(f"difference (mlpcli - sklearn): {mean_ours - mean_theirs:+.4f}")


if __name__ == "__main__":
    main()
