"""`mlpcli gradcheck`: passes on every example config, fails on a broken backward."""

import numpy as np
import pytest
from helpers import CONFIGS, cli, small_config, write_config
from test_cli import _idx

from mlpcli import activations


@pytest.mark.filterwarnings("ignore:The 'convert_dates' keyword")  # vega_datasets' pandas call
@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_gradcheck_passes_on_every_example_config(name, tmp_path, capsys, monkeypatch):
    if name == "mnist":  # its data is the user's download: stand in MNIST-shaped IDX files
        rng = np.random.default_rng(0)
        folder = tmp_path / "data" / "mnist"
        folder.mkdir(parents=True)
        for split, n in (("train", 50), ("t10k", 10)):
            _idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
            _idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
        monkeypatch.chdir(tmp_path)
    if name == "cars":  # README's one-line export of the table vega_datasets ships
        from vega_datasets import data

        (tmp_path / "data").mkdir()
        data.cars().to_csv(tmp_path / "data" / "cars.csv", index=False)
        monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "gradcheck", CONFIGS / f"{name}.yaml")
    assert code == 0, out + err
    assert out.rstrip().endswith("ok: every gradient agrees to 1e-06 relative")
    rows = [line for line in out.splitlines() if line.startswith("params/")]  # not the path
    assert rows and all(row.endswith(" ok") for row in rows)


def test_gradcheck_fails_and_names_the_parameter_of_a_broken_backward(
    tmp_path, capsys, monkeypatch
):
    config = write_config(tmp_path / "c.yaml", small_config())
    assert cli(capsys, "gradcheck", config)[0] == 0
    good = activations.DERIVATIVES["tanh"]

    def broken(xp, z, a, dy, tmp):  # forgets the square: tanh' = 1 - a, not 1 - a²
        xp.subtract(1.0, a, out=tmp)
        dy *= tmp

    monkeypatch.setitem(activations.DERIVATIVES, "tanh", broken)
    code, out, err = cli(capsys, "gradcheck", config)
    assert code == 1
    assert "params/0/W" in err and "params/0/b" in err and "params/1/W" not in err
    assert "FAIL" in out and err.startswith("error:") and len(err.splitlines()) == 1
    monkeypatch.setitem(activations.DERIVATIVES, "tanh", good)


def test_gradcheck_says_dropout_is_off(tmp_path, capsys):
    code, out, _ = cli(capsys, "gradcheck", write_config(tmp_path / "c.yaml", small_config()))
    assert code == 0 and "dropout is off during the check" in out
