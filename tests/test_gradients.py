"""Backprop against float64 central differences, and one example worked on paper."""

import numpy as np
import pytest

from mlpcli.activations import ACTIVATIONS, DERIVATIVES
from mlpcli.gradcheck import check_gradients
from mlpcli.losses import LOSSES
from mlpcli.model import MLP, Dense

TOL = 1e-7


def _mlp(sizes, activations, loss, seed=0, dropout=None):
    rng = np.random.default_rng(seed)
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        W = rng.normal(0, 1 / np.sqrt(fan_in), (fan_in, fan_out))
        b = rng.normal(0, 0.1, fan_out)
        last = i == len(sizes) - 2
        layers.append(Dense(np, W, b, activations[i], dropout or 0.0, keep_z=last))
    return MLP(np, layers, loss)


def _targets(loss, n, k, rng):
    if loss == "cross_entropy":
        return rng.integers(0, k, n)
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (n, 1)).astype(np.float64)
    return rng.normal(size=(n, k))


def _assert_close(model, x, y):
    for check in check_gradients(model, x, y):
        assert check.rel < TOL, check


@pytest.mark.parametrize("activation", [a for a in ACTIVATIONS if a != "softmax"])
def test_every_hidden_activation(activation):
    rng = np.random.default_rng(1)
    model = _mlp([3, 5, 4, 2], [activation, activation, "linear"], "mse")
    x = rng.normal(size=(7, 3))
    _assert_close(model, x, rng.normal(size=(7, 2)))


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_output_activation_with_mse(activation):
    # the unfused path: the loss gives dL/da and the activation's derivative turns it to dL/dz
    rng = np.random.default_rng(2)
    model = _mlp([3, 4, 3], ["tanh", activation], "mse")
    assert not model.fused or activation == "linear"
    x = rng.normal(size=(6, 3))
    _assert_close(model, x, rng.normal(size=(6, 3)))


@pytest.mark.parametrize(
    "loss, output, k",
    [("cross_entropy", "softmax", 4), ("binary_cross_entropy", "sigmoid", 1), ("mse", "linear", 2)],
)
def test_every_loss_fused_with_its_output(loss, output, k):
    rng = np.random.default_rng(3)
    model = _mlp([4, 6, 5, k], ["relu", "gelu", output], loss)
    assert model.fused
    x = rng.normal(size=(9, 4))
    _assert_close(model, x, _targets(loss, 9, k, rng))


def test_a_deeper_mlp_with_dropout_masks():
    rng = np.random.default_rng(4)
    model = _mlp(
        [5, 8, 8, 8, 3], ["relu", "leaky_relu", "tanh", "softmax"], "cross_entropy", dropout=0.5
    )
    x = rng.normal(size=(10, 5))
    y = rng.integers(0, 3, 10)
    masks = [rng.random((10, 8)) > 0.5 for _ in range(3)] + [None]  # keep-masks
    # a fixed mask makes the loss a deterministic function of the parameters
    model.forward = lambda x, _masks=None, f=model.forward: f(x, masks)
    _assert_close(model, x, y)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_derivatives_elementwise(name):
    rng = np.random.default_rng(5)
    z = rng.normal(size=(4, 3)) * 2
    dy = rng.normal(size=(4, 3))
    a = np.empty_like(z)
    ACTIVATIONS[name](np, z, a)
    analytic = dy.copy()
    DERIVATIVES[name](np, z.copy(), a, analytic, np.empty_like(z))  # gelu's uses z as scratch
    eps = 1e-6
    up, down = np.empty_like(z), np.empty_like(z)
    numeric = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[i] += eps
        zm[i] -= eps
        ACTIVATIONS[name](np, zp, up)
        ACTIVATIONS[name](np, zm, down)
        numeric[i] = ((up - down) * dy).sum() / (2 * eps)
    assert np.linalg.norm(analytic - numeric) / np.linalg.norm(numeric) < TOL


@pytest.mark.parametrize(
    "loss, output", [("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid")]
)
def test_losses_stay_finite_for_huge_logits(loss, output):
    z = np.array([[1e4, -1e4], [-1e4, 1e4], [0.0, 0.0]])
    if loss == "binary_cross_entropy":
        z = z[:, :1]
        y = np.array([[0.0], [1.0], [1.0]])
    else:
        y = np.array([1, 0, 1])
    a = np.empty_like(z)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no inf, no NaN
        ACTIVATIONS[output](np, z, a)
        grad = np.empty_like(z)
        value = LOSSES[loss](np, z, a, y, grad)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # rows 0 and 1 are confidently wrong by 2e4 (or 1e4 for BCE), row 2 costs log 2
    expected = (
        (2e4 + 2e4 + np.log(2)) / 3 if loss == "cross_entropy" else (1e4 + 1e4 + np.log(2)) / 3
    )
    assert value == pytest.approx(expected)


def test_worked_example_on_paper():
    """One linear unit, two samples, MSE: every number below can be checked by hand.

    x = [[1, 2], [3, 4]], W = [[0.5], [-1]], b = [1], y = [[0], [1]]
    z = xW + b = [[1*0.5 + 2*(-1) + 1], [3*0.5 + 4*(-1) + 1]] = [[-0.5], [-1.5]]
    L = mean((z - y)^2) = ((-0.5)^2 + (-2.5)^2) / 2 = (0.25 + 6.25) / 2 = 3.25
    dL/dz = 2 (z - y) / n = [[-0.5], [-2.5]]
    dW = xᵀ dz = [[1*-0.5 + 3*-2.5], [2*-0.5 + 4*-2.5]] = [[-8], [-11]]
    db = Σ dz = [-3]
    """
    W = np.array([[0.5], [-1.0]])
    b = np.array([1.0])
    model = MLP(np, [Dense(np, W, b, "linear", 0.0, keep_z=True)], "mse")
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    y = np.array([[0.0], [1.0]])
    a = model.forward(x)
    np.testing.assert_array_equal(a, [[-0.5], [-1.5]])
    assert float(model.loss_and_backward(a, y)) == 3.25
    np.testing.assert_array_equal(model.layers[0].dW, [[-8.0], [-11.0]])
    np.testing.assert_array_equal(model.layers[0].db, [-3.0])
