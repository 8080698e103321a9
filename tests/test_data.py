"""Data loading: built-in datasets, file formats, split, standardization and every error."""

import gzip
import pathlib
import struct
import tracemalloc

import numpy as np
import pytest

from mlpcli.data import (
    DATASETS,
    TRIANGLE,
    _common,
    apply_standardization,
    arrays,
    describe_datasets,
    load_dataset,
    load_features,
    load_labeled,
)
from mlpcli.errors import DataError


def section(**overrides):
    """A validated `data` section with every key present."""
    data = {
        "source": "triangle",
        "options": {},
        "target": None,
        "features": None,
        "val_split": 0.0,
        "val": None,
        "standardize": False,
        "standardize_target": False,
    }
    data.update(overrides)
    return data


def load(task="classification", seed=0, dtype="float64", **overrides):
    return load_dataset(section(**overrides), task=task, seed=seed, dtype=dtype)


def write(path: pathlib.Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file: two zero bytes, type code, ndim, big-endian dimensions, big-endian data."""
    big = {0x08: ">u1", 0x0D: ">f4"}[code]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(big).tobytes()


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------------------
# Built-in datasets

TWO_D = ["triangle", "xor", "spirals", "moons", "circles", "blobs"]
SMALL = {"n_samples": 300}


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_builtin_shapes_dtypes_and_determinism(name, dtype):
    task = DATASETS[name].task
    d = load(task=task, dtype=dtype, source=name, options=SMALL)
    n_features = 2 if name in TWO_D else DATASETS[name].options["n_features"].default
    assert d.x_train.shape == (300, n_features)
    assert d.x_train.dtype == np.dtype(dtype) and d.x_train.flags.c_contiguous
    assert d.x_val is None and d.y_val is None
    assert d.source == f"{name} (300 samples)"
    assert d.feature_names == [f"x{i}" for i in range(n_features)]
    if task == "classification":
        n_classes = DATASETS[name].options.get("n_classes")
        n_classes = n_classes.default if n_classes else 2
        assert d.y_train.shape == (300,) and d.y_train.dtype == np.int64
        assert np.array_equal(d.classes, np.arange(n_classes))
        assert set(np.unique(d.y_train)) == set(range(n_classes))
    else:
        assert d.y_train.shape == (300, 1) and d.y_train.dtype == np.dtype(dtype)
        assert d.classes is None
    again = load(task=task, dtype=dtype, source=name, options=SMALL)
    assert np.array_equal(d.x_train, again.x_train) and np.array_equal(d.y_train, again.y_train)
    other = load(task=task, dtype=dtype, seed=1, source=name, options=SMALL)
    assert not np.array_equal(d.x_train, other.x_train)


def test_triangle_labels_are_inside_the_triangle():
    d = load(source="triangle", options={"n_samples": 2000})
    x = d.x_train
    assert x.min() >= -1 and x.max() <= 1
    # barycentric coordinates, computed independently of the module
    a, b, c = TRIANGLE
    m = np.array([b - a, c - a]).T  # (2, 2)
    lam = np.linalg.solve(m, (x - a).T).T  # (n, 2)
    inside = (lam[:, 0] >= 0) & (lam[:, 1] >= 0) & (lam.sum(1) <= 1)
    assert np.array_equal(d.y_train, inside.astype(np.int64))
    assert 0.2 < d.y_train.mean() < 0.36  # triangle area 1.12 of the square's 4


def test_xor_labels():
    d = load(source="xor")
    x = d.x_train
    assert len(x) == 1000
    assert np.array_equal(d.y_train, ((x[:, 0] > 0) != (x[:, 1] > 0)).astype(np.int64))


def test_default_sizes():
    assert len(load(source="triangle").x_train) == 2000
    assert load(source="synthetic").x_train.shape == (10000, 20)
    assert len(load(source="moons").x_train) == 1000


@pytest.mark.parametrize("name", ["triangle", "spirals", "blobs", "circles", "synthetic"])
def test_label_noise_flips_that_fraction(name):
    clean = load(source=name, options={"n_samples": 1000})
    noisy = load(source=name, options={"n_samples": 1000, "noise": 0.1})
    assert np.array_equal(clean.x_train, noisy.x_train)  # same points, only labels move
    assert np.mean(clean.y_train != noisy.y_train) == pytest.approx(0.1)


def test_options_are_honoured():
    d = load(source="blobs", options={"n_samples": 60, "n_classes": 5})
    assert d.x_train.shape == (60, 2) and list(d.classes) == [0, 1, 2, 3, 4]
    assert np.bincount(d.y_train).tolist() == [12] * 5
    d = load(source="spirals", options={"n_classes": 4, "n_samples": 400})
    assert len(d.classes) == 4
    d = load(source="synthetic", options={"n_samples": 500, "n_features": 7, "n_classes": 3})
    assert d.x_train.shape == (500, 7) and len(d.classes) == 3
    d = load(source="synthetic", options={"n_samples": 1e3})  # a YAML float that is whole
    assert len(d.x_train) == 1000


def test_linear_is_a_noisy_linear_function():
    exact = load(task="regression", source="linear", options={"n_features": 3, "noise": 0})
    x1 = np.hstack([exact.x_train, np.ones((len(exact.x_train), 1))])
    coef, *_ = np.linalg.lstsq(x1, exact.y_train, rcond=None)
    assert np.allclose(x1 @ coef, exact.y_train)
    noisy = load(task="regression", source="linear", options={"n_features": 3, "noise": 0.5})
    assert np.std(x1 @ coef - noisy.y_train) == pytest.approx(0.5, rel=0.1)


def test_synthetic_is_learnable_by_nearest_centroid():
    d = load(source="synthetic", dtype="float32", options={"n_samples": 3000}, val_split=0.5)
    centroids = np.stack([d.x_train[d.y_train == k].mean(0) for k in range(10)])
    dist = ((d.x_val[:, None, :] - centroids[None]) ** 2).sum(-1)
    assert np.mean(dist.argmin(1) == d.y_val) > 0.9


def test_val_builtin_draws_other_samples_of_the_same_dataset():
    d = load(
        task="regression",
        source="linear",
        options={"noise": 0},
        val={"source": "linear", "options": {"n_samples": 50, "noise": 0}},
    )
    assert d.x_val.shape == (50, 1) and not np.array_equal(d.x_val, d.x_train[:50])
    x1 = np.hstack([d.x_train, np.ones((len(d.x_train), 1))])
    coef, *_ = np.linalg.lstsq(x1, d.y_train, rcond=None)
    assert np.allclose(np.hstack([d.x_val, np.ones((50, 1))]) @ coef, d.y_val)  # same w, b


def test_describe_datasets():
    described = {d["name"]: d for d in describe_datasets()}
    assert list(described) == [*TWO_D, "linear", "synthetic"]
    assert described["linear"]["task"] == "regression"
    options = {o["name"]: o for o in described["blobs"]["options"]}
    assert options["n_classes"]["default"] == 3 and options["n_samples"]["default"] == 1000
    assert all(o["help"] for d in described.values() for o in d["options"])
    synthetic = {o["name"] for o in described["synthetic"]["options"]}
    assert synthetic == {"n_samples", "noise", "n_features", "n_classes"}


@pytest.mark.parametrize(
    "options, expected",
    [
        (
            {"n_sample": 10},
            "data.options.n_sample: unknown option of dataset 'triangle'; "
            "did you mean 'n_samples'?",
        ),
        (
            {"colour": 1},
            "data.options.colour: unknown option of dataset 'triangle' (options: n_samples, noise)",
        ),
        ({"n_samples": "many"}, "data.options.n_samples: must be an integer, got 'many'"),
        ({"n_samples": 10.5}, "data.options.n_samples: must be an integer, got 10.5"),
        ({"n_samples": True}, "data.options.n_samples: must be an integer, got True"),
        ({"noise": "low"}, "data.options.noise: must be a number, got 'low'"),
        ({"n_samples": 1}, "data.options.n_samples: must be >= 2, got 1"),
        ({"noise": 1.5}, "data.options.noise: must be in [0, 1], got 1.5"),
        ({"noise": -0.1}, "data.options.noise: must be in [0, 1], got -0.1"),
    ],
)
def test_bad_options(options, expected):
    message = error_of(
        load_dataset,
        section(options=options),
        task="classification",
        seed=0,
        dtype="float32",
        config_file="run.yaml",
    )
    assert expected in message and "run.yaml" in message


def test_bad_option_of_val_builtin_names_its_key():
    message = error_of(load, val={"source": "blobs", "options": {"n_clases": 3}})
    assert "data.val.options.n_clases" in message and "did you mean 'n_classes'" in message


def test_linear_noise_is_not_capped_at_one_but_must_be_non_negative():
    assert len(load(task="regression", source="linear", options={"noise": 3}).x_train) == 1000
    message = error_of(load, task="regression", source="linear", options={"noise": -1})
    assert "data.options.noise: must be >= 0, got -1.0" in message


def test_task_mismatch_says_which_loss_fits():
    message = error_of(load, task="classification", source="linear")
    assert "data.source: 'linear' is a regression dataset" in message and "mse" in message
    message = error_of(load, task="regression", source="triangle")
    assert "'triangle' is a classification dataset" in message and "cross_entropy" in message


def test_unknown_source_suggests_a_builtin():
    message = error_of(load, source="triangel")
    assert "data.source: file not found: triangel" in message
    assert "did you mean the built-in dataset 'triangle'?" in message


# --------------------------------------------------------------------------------------
# Split and standardization


def rows(a):
    return {tuple(r) for r in a.tolist()}


def test_split_sizes_are_exact_and_splits_do_not_overlap():
    full = load(source="blobs", options={"n_samples": 100})
    d = load(source="blobs", options={"n_samples": 100}, val_split=0.55)
    assert len(d.x_val) == 55 and len(d.x_train) == 45  # 100 * 0.55 is 55, not 56
    assert d.x_train.flags.c_contiguous and d.x_val.flags.c_contiguous
    assert len(rows(d.x_train) | rows(d.x_val)) == 100
    assert rows(d.x_train) | rows(d.x_val) == rows(full.x_train)
    # labels travel with their samples
    label_of = {tuple(r): y for r, y in zip(full.x_train.tolist(), full.y_train, strict=True)}
    assert all(label_of[tuple(r)] == y for r, y in zip(d.x_val.tolist(), d.y_val, strict=True))
    assert len(load(source="blobs", options={"n_samples": 10}, val_split=0.01).x_val) == 1
    assert len(load(source="blobs", options={"n_samples": 1000}, val_split=0.1).x_val) == 100


def test_split_is_seeded():
    a = load(source="moons", options={"n_samples": 200}, val_split=0.3)
    b = load(source="moons", options={"n_samples": 200}, val_split=0.3)
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.y_train, b.y_train)
    c = load(source="moons", options={"n_samples": 200}, val_split=0.3, seed=5)
    assert not np.array_equal(a.x_val, c.x_val)


def test_block_by_block_processing_gives_the_same_arrays(monkeypatch):
    kwargs = dict(source="synthetic", options={"n_samples": 500}, val_split=0.3, standardize=True)
    whole = load(dtype="float32", **kwargs)
    monkeypatch.setattr(_common, "_CHUNK_BYTES", 200)  # blocks of 2 rows
    blocks = load(dtype="float32", **kwargs)
    assert np.array_equal(whole.x_train, blocks.x_train) and np.array_equal(
        whole.x_val, blocks.x_val
    )
    assert np.array_equal(whole.y_train, blocks.y_train)
    assert np.allclose(whole.x_mean, blocks.x_mean) and np.allclose(whole.x_std, blocks.x_std)


def test_split_must_leave_a_training_sample():
    message = error_of(load, source="xor", options={"n_samples": 2}, val_split=0.9)
    assert "data.val_split" in message and "no training sample" in message


def test_standardization_fits_the_training_rows_and_leaves_features_raw():
    kwargs = dict(task="regression", source="linear", options={"n_features": 2}, val_split=0.3)
    raw = load(**kwargs)
    d = load(**kwargs, standardize=True, standardize_target=True)
    # in memory, x_train is packed down to the training rows
    assert d.train_rows is None and d.n_train == len(d.x_train) == 700
    # features are raw: the trainer standardizes each batch with x_mean and x_std
    assert np.array_equal(d.x_train, raw.x_train) and np.array_equal(d.x_val, raw.x_val)
    assert d.x_mean.dtype == np.float64 and d.x_std.dtype == np.float64
    assert np.allclose(d.x_mean, raw.x_train.mean(0)) and np.allclose(d.x_std, raw.x_train.std(0))
    scaled = apply_standardization(d.x_train, d.x_mean, d.x_std)
    assert np.allclose(scaled.mean(0), 0) and np.allclose(scaled.std(0), 1)
    val = apply_standardization(d.x_val, d.x_mean, d.x_std)
    assert not np.allclose(val.mean(0), 0, atol=1e-6)  # val is scaled, not re-fitted
    # regression targets are still standardized in place
    assert np.allclose(d.y_mean, raw.y_train.mean(0)) and np.allclose(d.y_std, raw.y_train.std(0))
    assert np.allclose(d.y_train.mean(0), 0) and np.allclose(d.y_train.std(0), 1)
    assert np.allclose(d.y_val * d.y_std + d.y_mean, raw.y_val)
    assert raw.x_mean is None and raw.y_mean is None


def test_float32_statistics_and_constant_columns(tmp_path):
    path = write(tmp_path / "c.csv", "a,b,target\n1,0.1,0\n2,0.1,1\n3,0.1,0\n4,0.1,1\n")
    d = load(dtype="float32", source=path, standardize=True)
    assert d.x_train.dtype == np.float32 and d.x_train[:, 0].tolist() == [1, 2, 3, 4]
    assert d.x_mean.tolist() == pytest.approx([2.5, 0.1]) and d.x_std[1] == 1.0
    scaled = apply_standardization(d.x_train, d.x_mean, d.x_std)
    assert scaled.dtype == np.float32 and np.allclose(scaled[:, 1], 0, atol=1e-7)
    assert np.allclose(scaled[:, 0], (np.arange(1, 5) - 2.5) / np.std(np.arange(1, 5)))


def test_apply_standardization_returns_a_new_array():
    x = np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)
    out = apply_standardization(x, np.array([2.0, 4.0]), np.array([1.0, 2.0]))
    assert out.dtype == np.float32 and np.array_equal(out, [[-1, -1], [1, 1]])
    assert x[0, 0] == 1.0
    assert apply_standardization(x, None, None) is x


def test_standardize_target_is_for_regression_only():
    message = error_of(load, standardize_target=True)
    assert "data.standardize_target" in message and "regression" in message


# --------------------------------------------------------------------------------------
# File formats

CSV = "f1,f2,label\n0.5,1,cat\n1.5,2,dog\n2.5,3,cat\n3.5,4,bird\n"


def test_csv_with_string_labels(tmp_path):
    path = write(tmp_path / "pets.csv", CSV)
    d = load(source=path, target="label", dtype="float32")
    assert d.classes.dtype.kind == "U" and d.classes.tolist() == ["bird", "cat", "dog"]
    assert d.y_train.tolist() == [1, 2, 1, 0] and d.y_train.dtype == np.int64
    assert d.feature_names == ["f1", "f2"] and d.source == path
    assert d.x_train.dtype == np.float32
    assert d.x_train.tolist() == [[0.5, 1], [1.5, 2], [2.5, 3], [3.5, 4]]


def test_csv_default_target_column_features_subset_and_numeric_labels(tmp_path):
    path = write(tmp_path / "d.csv", "a, b, target, c\n1, 2, 1, 5\n3, 4, 0, 6\n5, 6, 1.0, 7\n")
    d = load(source=path)
    assert d.feature_names == ["a", "b", "c"] and d.classes.tolist() == [0, 1]
    assert d.classes.dtype == np.int64 and d.y_train.tolist() == [1, 0, 1]
    d = load(source=path, features=["c", "a"])
    assert d.feature_names == ["c", "a"] and d.x_train[:, 0].tolist() == [5, 6, 7]


def test_csv_quoted_fields_blank_lines_and_bom(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes('\ufeffx,target\n"1.5","a,b"\n\n2,"c"\n'.encode())
    d = load(source=str(path))
    assert d.classes.tolist() == ["a,b", "c"] and d.x_train.ravel().tolist() == [1.5, 2.0]


def test_csv_gz(tmp_path):
    path = tmp_path / "pets.csv.gz"
    path.write_bytes(gzip.compress(CSV.encode()))
    d = load(source=str(path), target="label")
    assert d.classes.tolist() == ["bird", "cat", "dog"] and d.x_train.shape == (4, 2)


def test_csv_multi_output_regression(tmp_path):
    path = write(tmp_path / "r.csv", "x,y1,y2\n1,2,3\n4,5,6\n7,8,9\n")
    d = load(task="regression", source=path, target=["y1", "y2"], dtype="float32")
    assert d.y_train.shape == (3, 2) and d.y_train.dtype == np.float32
    assert d.x_train.shape == (3, 1) and d.feature_names == ["x"]


def test_npz(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(12).reshape(6, 2), y=np.array([0, 1, 2, 0, 1, 2]))
    d = load(source=str(path), dtype="float32")
    assert d.x_train.shape == (6, 2) and d.x_train.dtype == np.float32
    assert d.classes.tolist() == [0, 1, 2] and d.feature_names == ["x0", "x1"]
    other = tmp_path / "other.npz"
    np.savez(other, inputs=np.ones((3, 4)), target=np.array([0.5, 1.5, 2.5]))
    d = load(task="regression", source=str(other), features="inputs")
    assert d.x_train.shape == (3, 4) and d.y_train.tolist() == [[0.5], [1.5], [2.5]]


def test_npy_with_npy_labels(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(20.0).reshape(5, 2, 2))
    np.save(tmp_path / "y.npy", np.array([1.0, 3.0, 3.0, 1.0, 1.0]))
    d = load(source=str(tmp_path / "x.npy"), target=str(tmp_path / "y.npy"))
    assert d.x_train.shape == (5, 4) and d.classes.tolist() == [1, 3]
    assert d.classes.dtype == np.int64 and d.y_train.tolist() == [0, 1, 1, 0, 0]


def test_idx_images_and_labels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "labels").write_bytes(idx_bytes(labels))
    d = load(
        source=str(tmp_path / "train-images-idx3-ubyte"),
        target=str(tmp_path / "labels"),
        dtype="float32",
    )
    assert d.x_train.shape == (7, 784) and d.x_train.dtype == np.float32
    assert np.array_equal(d.x_train, images.reshape(7, 784))
    assert d.classes.tolist() == [1, 2, 3, 4, 5, 9] and d.y_train.tolist() == [2, 0, 3, 0, 4, 5, 1]


def test_gzipped_idx_whatever_its_name(tmp_path):
    images = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3) / 7
    labels = np.array([0, 1], dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 0x0D)))
    (tmp_path / "mnist_labels_blob").write_bytes(gzip.compress(idx_bytes(labels)))
    d = load(
        source=str(tmp_path / "train-images-idx3-ubyte.gz"),
        target=str(tmp_path / "mnist_labels_blob"),
    )
    assert d.x_train.shape == (2, 9) and np.allclose(d.x_train, images.reshape(2, 9))
    assert d.y_train.tolist() == [0, 1]


def test_val_file_with_csv_columns_matched_by_name(tmp_path):
    train = write(tmp_path / "train.csv", CSV)
    val = write(tmp_path / "val.csv", "label,f2,f1,id\ndog,20,10,a\ncat,40,30,b\n")
    d = load(source=train, target="label", val={"source": val, "target": "label"})
    assert d.x_val.tolist() == [[10, 20], [30, 40]]
    assert d.classes[d.y_val].tolist() == ["dog", "cat"]


def test_val_labels_must_be_training_classes(tmp_path):
    train = write(tmp_path / "train.csv", CSV)
    val = write(tmp_path / "val.csv", "f1,f2,label\n1,2,cat\n3,4,fish\n")
    message = error_of(load, source=train, target="label", val={"source": val, "target": "label"})
    assert f"data.val: {val}" in message and "label 'fish' does not appear" in message
    assert "bird, cat, dog" in message


def test_val_split_must_be_zero_with_val(tmp_path):
    message = error_of(load, val_split=0.2, val={"source": "triangle"})
    assert "data.val_split: must be 0 when data.val is given" in message


# --------------------------------------------------------------------------------------
# Memory-mapped .npy features


def npy_pair(tmp_path, x, y) -> tuple[str, str]:
    """x and y saved as x.npy and y.npy in tmp_path: their paths."""
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return str(tmp_path / "x.npy"), str(tmp_path / "y.npy")


def numbered_rows(n=200, shape=(3, 2), dtype=np.float32):
    """(n, *shape) features whose first value is the row's index, and 3-class labels."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(n, *shape)).astype(dtype)
    x.reshape(n, -1)[:, 0] = np.arange(n)
    return x, rng.integers(0, 3, size=n)


def test_npy_of_the_requested_dtype_is_split_through_train_rows(tmp_path):
    x, y = numbered_rows()
    source, target = npy_pair(tmp_path, x, y)
    d = load(dtype="float32", source=source, target=target, val_split=0.25, standardize=True)
    flat = x.reshape(200, 6)
    assert isinstance(d.x_train, np.memmap) and not d.x_train.flags.writeable
    assert d.x_train.shape == (200, 6) and d.x_train.flags.c_contiguous
    assert d.x_train.dtype == np.float32 and d.n_features == 6
    assert np.array_equal(d.x_train, flat)  # every row of the file, raw
    rows = d.train_rows
    assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)  # sorted, unique
    assert d.n_train == len(rows) == 150 and len(d.y_train) == 150
    val_rows = d.x_val[:, 0].astype(np.int64)  # the first feature numbers the rows
    assert np.all(np.diff(val_rows) > 0) and len(val_rows) == 50
    assert not set(rows) & set(val_rows) and set(rows) | set(val_rows) == set(range(200))
    assert not isinstance(d.x_val, np.memmap) and d.x_val.flags.writeable
    assert d.x_val.dtype == np.float32 and np.array_equal(d.x_val, flat[val_rows])
    assert np.array_equal(d.classes[d.y_train], y[rows])
    assert np.array_equal(d.classes[d.y_val], y[val_rows])
    train = flat[rows].astype(np.float64)
    assert np.allclose(d.x_mean, train.mean(0)) and np.allclose(d.x_std, train.std(0))
    # the same split and statistics as the same file loaded into memory
    mem = load(dtype="float64", source=source, target=target, val_split=0.25, standardize=True)
    assert not isinstance(mem.x_train, np.memmap) and mem.train_rows is None
    assert np.array_equal(mem.x_train, flat[rows]) and np.array_equal(mem.x_val, d.x_val)
    assert np.array_equal(mem.y_train, d.y_train) and np.array_equal(mem.y_val, d.y_val)
    assert np.allclose(mem.x_mean, d.x_mean) and np.allclose(mem.x_std, d.x_std)


def test_memory_map_block_by_block_gives_the_same_statistics(tmp_path, monkeypatch):
    x, y = numbered_rows(n=300, shape=(5,))
    source, target = npy_pair(tmp_path, x, y)
    kwargs = dict(dtype="float32", source=source, target=target, val_split=0.3, standardize=True)
    whole = load(**kwargs)
    monkeypatch.setattr(_common, "_CHUNK_BYTES", 80)  # blocks of 2 rows
    blocks = load(**kwargs)
    assert np.array_equal(whole.train_rows, blocks.train_rows)
    assert np.array_equal(whole.x_val, blocks.x_val)
    assert np.allclose(whole.x_mean, blocks.x_mean) and np.allclose(whole.x_std, blocks.x_std)


def test_memory_map_without_a_split_and_of_one_dimensional_features(tmp_path):
    x = np.linspace(-1, 1, 50, dtype=np.float32)  # (50,): one feature per sample
    source, target = npy_pair(tmp_path, x, (x > 0).astype(np.int64))
    d = load(dtype="float32", source=source, target=target, standardize=True)
    assert isinstance(d.x_train, np.memmap) and d.x_train.shape == (50, 1)
    assert d.train_rows is None and d.n_train == 50 and d.x_val is None
    assert d.x_mean == pytest.approx([0.0], abs=1e-7) and d.x_std == pytest.approx([x.std()])
    # a separate validation file is loaded into memory; the training file stays mapped
    val, val_target = tmp_path / "val.npy", tmp_path / "val_y.npy"
    np.save(val, x[:10])
    np.save(val_target, np.arange(10) % 2)
    val_cfg = {"source": str(val), "target": str(val_target)}
    d = load(dtype="float32", source=source, target=target, val=val_cfg)
    assert isinstance(d.x_train, np.memmap) and d.train_rows is None
    assert not isinstance(d.x_val, np.memmap) and np.array_equal(d.x_val, x[:10, None])


def test_memory_map_reads_the_file_block_by_block(tmp_path, monkeypatch):
    x, y = numbered_rows(n=10000, shape=(400,))  # 16 MB of float32
    source, target = npy_pair(tmp_path, x, y)
    monkeypatch.setattr(_common, "_CHUNK_BYTES", 1 << 18)
    tracemalloc.start()
    try:
        d = load(dtype="float32", source=source, target=target, val_split=0.05, standardize=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(d.x_train, np.memmap)
    # the 5 % validation copy, labels, indices and a block or two; never the whole file
    assert peak < 0.25 * x.nbytes


@pytest.mark.parametrize(
    "case",
    ["float64 on disk", "Fortran order", "gzipped", "big-endian"],
)
def test_other_npy_files_are_loaded_into_memory(tmp_path, case):
    x, y = numbered_rows(n=40)
    x = x.reshape(40, 6)
    stored = {
        "float64 on disk": x.astype(np.float64),
        "Fortran order": np.asfortranarray(x),
        "gzipped": x,
        "big-endian": x.astype(">f4"),
    }[case]
    source, target = npy_pair(tmp_path, stored, y)
    if case == "gzipped":
        pathlib.Path(source + ".gz").write_bytes(gzip.compress(pathlib.Path(source).read_bytes()))
        source += ".gz"
    d = load(dtype="float32", source=source, target=target, val_split=0.25)
    assert not isinstance(d.x_train, np.memmap) and d.x_train.flags.writeable
    assert d.x_train.dtype == np.float32 and d.x_train.flags.c_contiguous
    assert d.train_rows is None and d.n_train == len(d.x_train) == 30
    rows = d.x_train[:, 0].astype(np.int64)
    assert np.array_equal(d.x_train, x[rows])


def test_eval_data_is_loaded_into_memory(tmp_path):
    x, y = numbered_rows(n=30)
    source, target = npy_pair(tmp_path, x, y)
    features, labels, _ = load_labeled(
        {"source": source, "target": target},
        task="classification",
        seed=0,
        dtype="float32",
        classes=np.arange(3),
        feature_names=[f"x{i}" for i in range(6)],
    )
    assert not isinstance(features, np.memmap) and np.array_equal(features, x.reshape(30, 6))
    assert np.array_equal(labels, y)


def test_non_finite_value_in_a_memory_map_is_named(tmp_path, monkeypatch):
    x, y = numbered_rows(n=100, shape=(8,))
    x[37, 4] = np.nan
    source, target = npy_pair(tmp_path, x, y)
    assert arrays._mappable(source, np.dtype(np.float32))
    monkeypatch.setattr(_common, "_CHUNK_BYTES", 96)  # blocks of 3 rows
    message = error_of(load, dtype="float32", source=source, target=target)
    assert message.startswith(source) and "sample 37, feature 4 is nan" in message
    x[37, 4], x[99, 7] = 1.0, -np.inf
    source, target = npy_pair(tmp_path, x, y)
    message = error_of(load, dtype="float32", source=source, target=target, val_split=0.5)
    assert "sample 99, feature 7 is -inf" in message


def test_truncated_npy_is_a_data_error(tmp_path):
    x, y = numbered_rows(n=100)
    source, target = npy_pair(tmp_path, x, y)
    whole = pathlib.Path(source).read_bytes()
    pathlib.Path(source).write_bytes(whole[:-40])
    for dtype in ("float32", "float64"):  # mapped, read
        message = error_of(load, dtype=dtype, source=source, target=target)
        assert f"{source}: the .npy array cannot be read" in message


# --------------------------------------------------------------------------------------
# Errors in files


def csv_error(tmp_path, text, task="classification", name="bad.csv", **overrides):
    path = write(tmp_path / name, text)
    return path, error_of(load, task=task, source=path, **overrides)


def test_missing_file():
    message = error_of(load, source="no/such/file.csv")
    assert "data.source: file not found: no/such/file.csv" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a,b,target\n1,2,0\n3,x7,1\n", "line 3, column 'b': not a number: 'x7'"),
        ("a,b,target\n1,2,0\n3,4,1\n5,,0\n", "line 4, column 'b': empty cell"),
        ("a,b,target\n1,nan,0\n3,4,1\n", "line 2, column 'b': not a finite number: 'nan'"),
        ("a,b,target\n1,2,0\n3,-inf,1\n", "line 3, column 'b': not a finite number: '-inf'"),
        ("a,b,target\n1,2,0\n3,4\n", "line 3: 2 fields, the header (line 1) has 3"),
        ("a,b,target\n1,2,0,9\n", "line 2: 4 fields, the header (line 1) has 3"),
        ("a,b,target\n1,2,\n", "line 2, column 'target': empty cell"),
        ("a,b,c\n1,2,0\n", "line 1: has no column 'target' (data.target); columns are: a, b, c"),
        ("a,b,Target\n1,2,0\n", "columns are: a, b, Target; did you mean 'Target'?"),
        ("", "empty file"),
        ("a,b,target\n", "no data rows after the header"),
        ("a,a,target\n1,2,3\n", "line 1: column 'a' appears twice"),
        ("target\n1\n", "no feature columns"),
    ],
)
def test_csv_faults_name_file_line_and_column(tmp_path, text, expected):
    path, message = csv_error(tmp_path, text)
    assert message.startswith(path) and expected in message


def test_csv_missing_feature_column(tmp_path):
    path, message = csv_error(tmp_path, "a,b,target\n1,2,0\n", features=["a", "bb"])
    assert f"{path} line 1: has no column 'bb' (data.features)" in message
    assert "did you mean 'b'?" in message


def test_csv_feature_that_is_the_target(tmp_path):
    _, message = csv_error(tmp_path, "a,b,target\n1,2,0\n", features=["a", "target"])
    assert "data.features: column 'target'" in message and "is also the target" in message


def test_csv_regression_target_must_be_numeric(tmp_path):
    path, message = csv_error(tmp_path, "a,target\n1,2.5\n2,high\n", task="regression")
    assert f"{path} line 3, column 'target': not a number: 'high'" in message


def test_csv_classification_takes_one_target_column(tmp_path):
    _, message = csv_error(tmp_path, "a,t1,t2\n1,2,3\n", target=["t1", "t2"])
    assert "data.target: classification takes one target column" in message


def test_csv_with_one_class_only(tmp_path):
    _, message = csv_error(tmp_path, "a,target\n1,x\n2,x\n")
    assert "one class only ('x')" in message


def test_npz_missing_key_lists_keys(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, inputs=np.ones((3, 2)), labels=np.zeros(3))
    message = error_of(load, source=str(path))
    assert str(path) in message and "no feature array 'x' or 'features'" in message
    assert "keys are: inputs, labels" in message
    message = error_of(load, source=str(path), features="inputs", target="label")
    assert "no array 'label' (data.target); keys are: inputs, labels" in message
    assert "did you mean 'labels'?" in message


class Boobytrap:
    """Unpickling this touches a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickled_npz_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([Boobytrap(marker)] * 2, dtype=object), y=np.array([0, 1]))
    message = error_of(load, source=str(path))
    assert f"{path}: array 'x' holds Python objects" in message and "never unpickles" in message
    assert not marker.exists()
    npy = tmp_path / "evil.npy"
    np.save(npy, np.array([Boobytrap(marker)], dtype=object))
    message = error_of(load, source=str(npy), target=str(npy))
    assert f"{npy}: the .npy array holds Python objects" in message and not marker.exists()


def test_npy_needs_a_label_file(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    message = error_of(load, source=str(tmp_path / "x.npy"), config_file="c.yaml")
    assert "data.target: must name the label file" in message and "x.npy" in message
    message = error_of(load, source=str(tmp_path / "x.npy"), target=str(tmp_path / "nope.npy"))
    assert "data.target: file not found:" in message and "nope.npy" in message


def test_label_count_mismatch(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((10, 2)))
    np.save(tmp_path / "y.npy", np.zeros(9))
    message = error_of(load, source=str(tmp_path / "x.npy"), target=str(tmp_path / "y.npy"))
    assert "y.npy" in message and "9 labels for 10 samples" in message
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2)), y=np.zeros(5))
    message = error_of(load, source=str(tmp_path / "d.npz"))
    assert "d.npz (array 'y'): 5 labels for 4 samples" in message


def test_zero_samples_and_non_finite_arrays(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((0, 3)))
    np.save(tmp_path / "y.npy", np.zeros(0))
    message = error_of(load, source=str(tmp_path / "x.npy"), target=str(tmp_path / "y.npy"))
    assert "x.npy: no samples" in message
    x = np.ones((4, 3))
    x[2, 1] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]))
    message = error_of(load, source=str(tmp_path / "d.npz"))
    assert "d.npz (array 'x'): sample 2, feature 1 is nan" in message
    np.savez(tmp_path / "big.npz", x=np.full((2, 1), 1e300), y=np.array([0, 1]))
    message = error_of(load, source=str(tmp_path / "big.npz"), dtype="float32")
    assert "sample 0, feature 0 is inf" in message  # overflows float32


def test_truncated_idx(tmp_path):
    full = idx_bytes(np.zeros((5, 4, 4), dtype=np.uint8))
    (tmp_path / "images").write_bytes(full[:-10])
    (tmp_path / "labels").write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))
    message = error_of(load, source=str(tmp_path / "images"), target=str(tmp_path / "labels"))
    assert "images: truncated IDX file" in message and "5x4x4" in message
    (tmp_path / "images.gz").write_bytes(gzip.compress(full[:6]))
    message = error_of(load, source=str(tmp_path / "images.gz"), target=str(tmp_path / "labels"))
    assert "images.gz: truncated IDX file" in message


def test_corrupted_gzip(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + b"\0" * 40)[:-12])
    message = error_of(load, source=str(tmp_path / "x.gz"), target="y")
    assert "x.gz: corrupted gzip data" in message


def test_damaged_npz(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    message = error_of(load, source=str(tmp_path / "d.npz"))
    assert "d.npz: the .npz archive cannot be read" in message


def test_unknown_format_lists_formats(tmp_path):
    path = write(tmp_path / "data.txt", "a b c\n1 2 3\n")
    message = error_of(load, source=path)
    assert f"{path}: unknown file format" in message
    assert ".csv" in message and ".npz" in message and "IDX" in message


# --------------------------------------------------------------------------------------
# load_features (predict)


def test_load_features_csv_by_name_ignoring_the_target(tmp_path):
    path = write(tmp_path / "in.csv", "target,b,a\n1,2,3\n0,5,6\n")
    x = load_features(path, feature_names=["a", "b"], dtype="float32")
    assert x.dtype == np.float32 and x.tolist() == [[3, 2], [6, 5]]
    assert load_features(path, feature_names=None, dtype="float64").shape == (2, 3)


def test_load_features_positional_for_generated_names(tmp_path):
    path = write(tmp_path / "in.csv", "u,v\n1,2\n")
    assert load_features(path, feature_names=["x0", "x1"], dtype="float64").tolist() == [[1, 2]]


def test_load_features_errors(tmp_path):
    path = write(tmp_path / "in.csv", "a,c\n1,2\n")
    message = error_of(load_features, path, feature_names=["a", "b"], dtype="float64")
    assert f"{path} line 1: has no column 'b'" in message and "columns are: a, c" in message
    bad = write(tmp_path / "bad.csv", "a,b\n1,2\n3,?\n")
    message = error_of(load_features, bad, feature_names=["a", "b"], dtype="float64")
    assert f"{bad} line 3, column 'b': not a number: '?'" in message
    np.save(tmp_path / "x.npy", np.ones((4, 3)))
    message = error_of(
        load_features, str(tmp_path / "x.npy"), feature_names=["x0", "x1"], dtype="float64"
    )
    assert "3 features per sample, the model expects 2" in message
    message = error_of(
        load_features, str(tmp_path / "none.csv"), feature_names=None, dtype="float64"
    )
    assert "file not found:" in message and "none.csv" in message


def test_load_features_npy_and_idx(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(6).reshape(3, 2))
    x = load_features(str(tmp_path / "x.npy"), feature_names=["x0", "x1"], dtype="float32")
    assert x.dtype == np.float32 and x.shape == (3, 2)
    (tmp_path / "img").write_bytes(gzip.compress(idx_bytes(np.ones((2, 2, 2), np.uint8))))
    x = load_features(str(tmp_path / "img"), feature_names=None, dtype="float64")
    assert x.shape == (2, 4) and x.dtype == np.float64
