"""Tabular CSV data: categorical columns (one-hot), missing numeric cells (filled), fitted on
the training split, stored in the checkpoint and applied by eval, predict and resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers import CONFIGS, cli, load_last, user_error, write_config
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlpcli.data import load_dataset, read_inputs
from mlpcli.data.load import split_rows

ISLANDS = ["Biscoe", "Dream", "Torgersen"]
SEXES = ["female", "male"]


def make_table(n: int, seed: int) -> dict[str, list]:
    """Columns of a penguin-like table: numbers with holes (None), categories with empty
    cells (""), and a species label that depends on both."""
    rng = np.random.default_rng(seed)
    bill = np.round(rng.normal(44, 5, n), 1)
    mass = np.round(rng.normal(4200, 800, n))
    island = rng.choice(ISLANDS, n)
    sex = rng.choice(SEXES, n)
    species = np.where(bill > 45, "Gentoo", np.where(island == "Dream", "Chinstrap", "Adelie"))
    table = {
        "bill": [None if rng.random() < 0.15 else float(v) for v in bill],
        "island": ["" if rng.random() < 0.1 else str(v) for v in island],
        "mass": [None if rng.random() < 0.1 else float(v) for v in mass],
        "sex": [str(v) for v in sex],
        "species": [str(v) for v in species],
    }
    return table


def write_table(path, table: dict[str, list], order: list[str] | None = None):
    names = order or list(table)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for row in zip(*(table[c] for c in names), strict=True):
            writer.writerow(["" if v is None else v for v in row])
    return path


def sklearn_encoder(missing: str, scale: bool = False) -> ColumnTransformer:
    """The scikit-learn equivalent of mlpcli's encoding, one transformer per column in the
    CSV's order (so the output columns line up)."""
    strategy = {"zero": "constant", "mean": "mean", "median": "median"}[missing]

    def numeric():
        steps = [SimpleImputer(strategy=strategy, fill_value=0)]
        return make_pipeline(*steps, StandardScaler()) if scale else make_pipeline(*steps)

    def categorical():  # the empty cell is a category of its own, as in mlpcli
        return OneHotEncoder(handle_unknown="ignore", sparse_output=False)

    return ColumnTransformer(
        [
            ("bill", numeric(), [0]),
            ("island", categorical(), [1]),
            ("mass", numeric(), [2]),
            ("sex", categorical(), [3]),
        ]
    )


def as_sklearn_input(table: dict[str, list]) -> np.ndarray:
    """The four feature columns as an object array: NaN for missing numbers, "" kept."""
    cols = [
        [np.nan if v is None else v for v in table["bill"]],
        table["island"],
        [np.nan if v is None else v for v in table["mass"]],
        table["sex"],
    ]
    return np.array(list(zip(*cols, strict=True)), dtype=object)


def data_section(path, **changes) -> dict:
    section = {
        "source": str(path),
        "target": "species",
        "val_split": 0.3,
        "standardize": False,
        "categorical": "auto",
        "missing": "mean",
    }
    section.update(changes)
    return section


# ----------------------------------------------------------------------------- vs scikit-learn


@pytest.mark.parametrize("missing", ["mean", "median", "zero"])
def test_encoded_matrix_equals_simple_imputer_and_one_hot_encoder(tmp_path, missing):
    table = make_table(200, seed=1)
    path = write_table(tmp_path / "p.csv", table)
    data = load_dataset(
        data_section(path, missing=missing), task="classification", seed=3, dtype="float64"
    )
    val_rows, train_rows = split_rows(200, 0.3, seed=3)
    raw = as_sklearn_input(table)
    encoder = sklearn_encoder(missing).fit(raw[train_rows])
    # fitted on the training rows only: the validation rows' statistics do not leak in
    np.testing.assert_allclose(
        data.x_train, encoder.transform(raw[train_rows]).astype(float), rtol=1e-12
    )
    np.testing.assert_allclose(
        data.x_val, encoder.transform(raw[val_rows]).astype(float), rtol=1e-12
    )
    assert data.x_train.shape[1] == 1 + 4 + 1 + 2  # island: "", Biscoe, Dream, Torgersen

    # new data (another table, columns in another order, one unseen island, one empty sex)
    other = make_table(40, seed=2)
    other["island"][:3] = ["Mars", "Mars", "Biscoe"]
    other["sex"][5] = ""
    order = ["sex", "species", "mass", "island", "bill"]
    new = write_table(tmp_path / "new.csv", other, order)
    x, unseen = read_inputs(
        str(new), feature_names=data.feature_names, encoding=data.encoding, dtype="float64"
    )
    np.testing.assert_allclose(
        x, encoder.transform(as_sklearn_input(other)).astype(float), rtol=1e-12
    )
    assert unseen == {"island": 2, "sex": 1}


def test_standardized_inputs_equal_the_scikit_learn_pipeline(tmp_path):
    """Numeric columns imputed then standardized, one-hot columns left as 0/1, as a
    ColumnTransformer of SimpleImputer + StandardScaler and OneHotEncoder gives."""
    table = make_table(150, seed=4)
    path = write_table(tmp_path / "p.csv", table)
    data = load_dataset(
        data_section(path, missing="median", standardize=True),
        task="classification",
        seed=0,
        dtype="float64",
    )
    val_rows, train_rows = split_rows(150, 0.3, seed=0)
    raw = as_sklearn_input(table)
    pipeline = sklearn_encoder("median", scale=True).fit(raw[train_rows])
    ours = (data.x_val - data.x_mean) / data.x_std
    np.testing.assert_allclose(ours, pipeline.transform(raw[val_rows]), rtol=1e-10, atol=1e-12)
    one_hot = data.encoding.one_hot()
    assert one_hot.tolist() == [False, True, True, True, True, False, True, True]
    assert (data.x_mean[one_hot] == 0).all() and (data.x_std[one_hot] == 1).all()


# ----------------------------------------------------------------------------- end to end


def config_for(tmp_path, csv_path, **data_changes) -> dict:
    data = {"source": str(csv_path), "target": "species", "val_split": 0.25}
    data.update(data_changes)
    return {
        "name": "tab",
        "seed": 0,
        "data": data,
        "model": {"layers": [{"units": 8}, {"units": 3}]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 4, "batch_size": 16},
        "logging": {"logdir": str(tmp_path / "logs"), "graph": False},
    }


@pytest.fixture
def trained(tmp_path, capsys):
    """A run on a table with a categorical column and holes (missing: mean)."""
    path = write_table(tmp_path / "p.csv", make_table(120, seed=0))
    config = write_config(tmp_path / "c.yaml", config_for(tmp_path, path, missing="mean"))
    code, _, err = cli(capsys, "train", config, "--name", "run", "-q")
    assert code == 0, err
    return tmp_path / "logs" / "run"


def test_checkpoint_holds_vocabularies_and_fills_as_plain_arrays(trained):
    with np.load(trained / "checkpoints" / "last.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert all(a.dtype.kind != "O" for a in arrays.values())
    assert arrays["data/categories/1"].tolist() == ["", *ISLANDS]
    assert arrays["data/categories/1"].dtype.kind == "U"
    assert arrays["data/categories/3"].tolist() == SEXES
    meta = json.loads(str(arrays["meta"]))
    assert meta["feature_names"] == ["bill", "island", "mass", "sex"]
    table = make_table(120, seed=0)
    _, train_rows = split_rows(120, 0.25, seed=0)
    bills = [table["bill"][i] for i in train_rows if table["bill"][i] is not None]
    assert arrays["data/fill"][0] == pytest.approx(np.mean(bills), rel=1e-12)
    assert arrays["params/0/W"].shape[0] == 1 + 4 + 1 + 2 == arrays["data/x_mean"].shape[0]


def test_predict_takes_raw_columns_by_name_and_warns_once_about_unseen(trained, tmp_path, capsys):
    table = make_table(10, seed=7)
    plain = write_table(tmp_path / "a.csv", table, ["bill", "island", "mass", "sex"])
    shuffled = write_table(tmp_path / "b.csv", table, ["sex", "mass", "species", "island", "bill"])
    code, first, err = cli(capsys, "predict", trained, plain, "--proba")
    assert code == 0 and err == ""
    code, second, err = cli(capsys, "predict", trained, shuffled, "--proba")
    assert code == 0 and err == ""
    assert first == second
    table["island"][2] = "Atlantis"
    table["sex"][4] = "unknown"
    table["island"][6] = "Atlantis"
    unseen = write_table(tmp_path / "c.csv", table)
    code, out, err = cli(capsys, "predict", trained, unseen)
    assert code == 0
    assert err.count("\n") == 1 and err.startswith("warning: ")
    assert "3 cells hold categories not seen in the training split" in err
    assert "island: 2" in err and "sex: 1" in err
    assert len(out.splitlines()) == 11  # header + every row still predicted
    # a missing numeric cell is filled with the stored mean
    table["mass"][0] = None
    code, _, err = cli(capsys, "predict", trained, write_table(tmp_path / "d.csv", table))
    assert code == 0


def test_eval_applies_the_stored_encoding(trained, tmp_path, capsys):
    code, out, err = cli(capsys, "eval", trained, "--json")
    assert code == 0 and err == ""
    _, meta = load_last(trained, "best.npz")
    assert json.loads(out)["accuracy"] == pytest.approx(meta["metrics"]["val/accuracy"])
    table = make_table(30, seed=9)
    table["island"][0] = "Atlantis"
    code, out, err = cli(
        capsys, "eval", trained, "--data", write_table(tmp_path / "e.csv", table), "--json"
    )
    assert code == 0
    assert err.startswith("warning: ") and err.count("\n") == 1
    assert "1 cell holds a category not seen" in err
    assert json.loads(out)["n_samples"] == 30


def test_inspect_shows_vocabularies_and_fills(trained, capsys):
    code, out, _ = cli(capsys, "inspect", trained)
    assert code == 0
    assert "one-hot    island: (missing), Biscoe, Dream, Torgersen" in out
    assert "one-hot    sex: female, male" in out
    assert "fill       mean: bill " in out and ", mass " in out
    code, out, _ = cli(capsys, "inspect", trained, "--json")
    info = json.loads(out)
    assert info["categories"] == {"island": ["", *ISLANDS], "sex": SEXES}
    assert set(info["fill"]) == {"bill", "mass"}


def test_resume_is_exact_on_tabular_data(tmp_path, capsys):
    path = write_table(tmp_path / "p.csv", make_table(120, seed=0))
    config = write_config(tmp_path / "c.yaml", config_for(tmp_path, path, missing="median"))
    assert cli(capsys, "train", config, "--name", "straight", "-q")[0] == 0
    assert cli(capsys, "train", config, "--name", "split", "--epochs", "2", "-q")[0] == 0
    code, _, err = cli(capsys, "resume", tmp_path / "logs" / "split", "--epochs", "4", "-q")
    assert code == 0, err
    a, _ = load_last(tmp_path / "logs" / "straight")
    b, _ = load_last(tmp_path / "logs" / "split")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_numeric_csv_checkpoint_is_unchanged(tmp_path, capsys):
    """No categorical column and missing: error: no encoding, no new keys."""
    table = make_table(60, seed=0)
    table["island"] = [float(i % 3) for i in range(60)]
    table["sex"] = [float(i % 2) for i in range(60)]
    table["bill"] = [v if v is not None else 40.0 for v in table["bill"]]
    table["mass"] = [v if v is not None else 4000.0 for v in table["mass"]]
    path = write_table(tmp_path / "n.csv", table)
    config = write_config(tmp_path / "c.yaml", config_for(tmp_path, path))
    assert cli(capsys, "train", config, "--name", "n", "-q")[0] == 0
    arrays, _ = load_last(tmp_path / "logs" / "n")
    assert not [k for k in arrays if k.startswith(("data/fill", "data/categories"))]
    assert arrays["params/0/W"].shape[0] == 4


# ----------------------------------------------------------------------------- column kinds


def test_explicit_list_makes_a_numeric_column_categorical(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,code,target\n1,10,x\n2,20,y\n3,10,x\n4,30,y\n")
    data = load_dataset(
        {"source": str(path), "categorical": ["code"], "val_split": 0, "standardize": False},
        task="classification",
        seed=0,
        dtype="float64",
    )
    assert data.encoding.categories[1].tolist() == ["10", "20", "30"]
    assert data.x_train.tolist() == [[1, 1, 0, 0], [2, 0, 1, 0], [3, 1, 0, 0], [4, 0, 0, 1]]
    # and `[]`: no column is categorical, text is an error again
    path.write_text("a,code,target\n1,b,x\n2,c,y\n")
    message = _load_error(path, categorical=[])
    assert "line 2, column 'code': not a number: 'b'" in message
    assert "list 'code' under data.categorical" in message


def test_na_markers_are_missing_in_numeric_columns_and_names_in_categorical(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,region,target\n1,EU,x\nNA,NA,y\n3,,x\nnan,EU,y\n5,N/A,x\n")
    data = load_dataset(
        {"source": str(path), "missing": "zero", "val_split": 0, "standardize": False},
        task="classification",
        seed=0,
        dtype="float64",
    )
    assert data.encoding.categories[1].tolist() == ["", "EU", "N/A", "NA"]
    assert data.x_train[:, 0].tolist() == [1, 0, 3, 0, 5]


def _load_error(path, **changes) -> str:
    from mlpcli.errors import DataError

    section = {"source": str(path), "val_split": 0}
    section.update(changes)
    with pytest.raises(DataError) as info:
        load_dataset(section, task="classification", seed=0, dtype="float64")
    return str(info.value)


# ----------------------------------------------------------------------------- bad input


def _train_error(tmp_path, capsys, text: str, **data_changes) -> str:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    config = write_config(tmp_path / "c.yaml", config_for(tmp_path, path, **data_changes))
    result = cli(capsys, "train", config, "-q")
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())
    return user_error(result)


def test_mixed_column_is_an_error_naming_file_line_and_column(tmp_path, capsys):
    text = "a,b,species\n1,2,x\n3,4,y\n5,oops,x\n6,,z\n"
    line = _train_error(tmp_path, capsys, text)
    assert f"{tmp_path / 'bad.csv'} line 4, column 'b': not a number: 'oops'" in line
    assert "line 2: '2'" in line and "list 'b' under data.categorical" in line
    # listed, the same column trains, every cell a category
    config = write_config(
        tmp_path / "ok.yaml",
        config_for(tmp_path, tmp_path / "bad.csv", categorical=["b"]) | {"name": "ok"},
    )
    code, _, err = cli(capsys, "train", config, "--name", "ok", "-q")
    assert code == 0, err


def test_empty_cell_with_missing_error_names_file_line_and_column(tmp_path, capsys):
    line = _train_error(tmp_path, capsys, "a,b,species\n1,2,x\n3,,y\n5,6,x\n", missing="error")
    assert "bad.csv line 3, column 'b': empty cell" in line
    assert "data.missing: mean, median or zero" in line


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"categorical": ["nope"]}, "data.categorical: 'nope' of"),
        ({"categorical": ["species"]}, "'species' of"),
        ({"categorical": ["a", "a"]}, "data.categorical"),
        ({"missing": "mode"}, "data.missing"),
    ],
)
def test_bad_tabular_keys(tmp_path, capsys, changes, fragment):
    line = _train_error(tmp_path, capsys, "a,b,species\n1,2,x\n3,4,y\n", **changes)
    assert fragment in line


def test_mean_of_a_column_without_numbers_is_an_error(tmp_path, capsys):
    line = _train_error(
        tmp_path, capsys, "a,b,species\n1,,x\n3,NA,y\n4,,x\n", missing="mean", categorical=[]
    )
    assert "data.missing: column 'b' has no number in the training split" in line


def test_categorical_keys_on_a_built_in_dataset_are_errors(tmp_path, capsys):
    config = config_for(tmp_path, "triangle", missing="mean")
    config["data"].pop("target")
    config["model"]["layers"][-1]["units"] = 2
    result = cli(capsys, "train", write_config(tmp_path / "c.yaml", config), "-q")
    user_error(result, "data.missing: is for the columns of a CSV file")


def test_predict_errors(trained, tmp_path, capsys):
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((2, 8)))
    user_error(cli(capsys, "predict", trained, npy), "the model takes the columns of a CSV")
    text = "bill,island,mass,sex\n40,Dream,4000,male\n41,Dream,oops,male\n"
    (tmp_path / "bad.csv").write_text(text)
    line = user_error(cli(capsys, "predict", trained, tmp_path / "bad.csv"))
    assert "bad.csv line 3, column 'mass': not a number: 'oops'" in line
    (tmp_path / "short.csv").write_text("bill,mass,sex\n40,4000,male\n")
    user_error(cli(capsys, "predict", trained, tmp_path / "short.csv"), "no column 'island'")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("data/categories/1", np.array(["Biscoe", "Dream"]), "make 6 inputs, the model has 8"),
        ("data/categories/1", np.array(["Dream", "", "Biscoe", "T"]), "must be sorted"),
        ("data/categories/1", np.array([1, 2, 3, 4]), "string array"),
        ("data/categories/9", np.array(["a"]), "names no input column"),
        ("data/categories/01", np.array(["a"]), "not a column number"),
        ("data/fill", np.array([1.0, np.nan, 2.0, 0.0]), "NaN"),
    ],
)
def test_damaged_vocabularies_are_refused(trained, tmp_path, capsys, key, value, fragment):
    arrays, meta = load_last(trained)
    arrays[key] = value
    from mlpcli import checkpoint

    bad = tmp_path / "bad.npz"
    checkpoint.save(bad, arrays, meta)
    user_error(cli(capsys, "inspect", bad), fragment)


# ----------------------------------------------------------------------------- the example


@pytest.mark.filterwarnings("ignore:The 'convert_dates' keyword")  # vega_datasets, not ours
def test_cars_example_runs_as_the_readme_says(tmp_path, capsys, monkeypatch):
    from vega_datasets import data

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    data.cars().to_csv("data/cars.csv", index=False)  # README's one-line export
    code, out, err = cli(capsys, "train", CONFIGS / "cars.yaml", "--logdir", "logs", "-q")
    assert code == 0, err
    assert err == ""
    run = next((tmp_path / "logs").iterdir())
    arrays, meta = load_last(run)
    assert meta["metrics"]["val/accuracy"] >= 0.7
    assert len(arrays["data/categories/6"]) >= 12  # Year: one category per model year
    code, out, _ = cli(capsys, "inspect", run)
    assert "fill       median: Miles_per_Gallon 23" in out


def test_validate_warns_about_categories_only_the_validation_split_has(tmp_path, capsys):
    table = make_table(80, seed=0)
    val_rows, _ = split_rows(80, 0.25, seed=0)
    for i in val_rows[:2]:
        table["sex"][i] = "unknown"
    path = write_table(tmp_path / "p.csv", table)
    config = write_config(tmp_path / "c.yaml", config_for(tmp_path, path, missing="zero"))
    code, out, err = cli(capsys, "validate", config)
    assert code == 0
    assert "8 features (from 4 columns, 2 categorical)" in out
    assert err == (
        "warning: the validation data: 2 cells hold categories not seen in the training "
        "split (sex: 2); encoded as all zeros\n"
    )
