"""The MLP: dense layers as matrix products, with backprop written out by hand.

Forward, per layer: z = x W + b, a = f(z) (then inverted dropout while training).
Backward, per layer, from dz = dL/dz: dW = xᵀ dz, db = Σ_rows dz, dx = dz Wᵀ.
Activations are kept in buffers allocated once per batch size and reused every step.
"""

from __future__ import annotations

import math
from typing import Any

from mlpcli import memory
from mlpcli.activations import ACTIVATIONS, DERIVATIVES, NEEDS_Z
from mlpcli.checkpoint import check_params
from mlpcli.errors import ConfigError
from mlpcli.initializers import init_layer
from mlpcli.losses import FUSED, LOSSES, correct, sample_weights


class Dense:
    """y = f(x W + b), with its gradients dW, db written into preallocated buffers."""

    def __init__(
        self, xp: Any, W: Any, b: Any, activation: str, dropout: float, keep_z: bool = False
    ):
        self.xp = xp
        self.W, self.b = W, b  # (fan_in, fan_out), (fan_out,)
        self.dW = self.db = None  # views into the MLP's flat gradient buffer
        self.activation = activation
        self.dropout = dropout
        # z gets its own buffer when the derivative needs it, or a loss reads the logits
        self.keep_z = keep_z or activation in NEEDS_Z
        self._cap = 0  # batch capacity of the buffers below

    @property
    def fan_in(self) -> int:
        return self.W.shape[0]

    @property
    def fan_out(self) -> int:
        return self.W.shape[1]

    def _buffers(self, n: int) -> None:
        """(Re)allocate activation buffers for batches of up to n rows."""
        if n <= self._cap:
            return
        xp, shape, dtype = self.xp, (n, self.fan_out), self.W.dtype
        self._z = xp.empty(shape, dtype)
        self._a = self._z if not self.keep_z else xp.empty(shape, dtype)
        self._out = xp.empty(shape, dtype) if self.dropout else self._a
        self._mask = xp.empty(shape, dtype) if self.dropout else None
        self._tmp = xp.empty(shape, dtype)  # scratch for the activation's derivative
        self._dx = xp.empty((n, self.fan_in), dtype)
        # db = 1ᵀ dz as a (1, n) @ (n, fan_out) product: faster than a column sum. Both sides
        # stay 2-D: CuPy 13 refuses a 1-D operand with `out=` ("axes don't match array")
        self._ones = xp.ones((1, n), dtype)
        self._cap = n

    def forward(self, x: Any, keep: Any = None) -> Any:
        """(n, fan_in) -> (n, fan_out); keeps x (and z if needed) for backward.

        `keep` (bool, (n, fan_out)) applies inverted dropout: kept units are scaled by
        1 / (1 - dropout), so evaluation needs no rescaling.
        """
        n = x.shape[0]
        self._buffers(n)
        self.x = x
        z = self._z[:n]
        self.xp.matmul(x, self.W, out=z)
        z += self.b
        # in place when z and a share memory; then z itself is passed as the output, since
        # CuPy copies an input that shares memory with `out` unless it is `out` itself
        a = z if self._a is self._z else self._a[:n]
        ACTIVATIONS[self.activation](self.xp, z, a)
        self.z, self.a = z, a
        if keep is None:
            self.mask = None
            return a
        self.mask = self._mask[:n]
        self.xp.copyto(self.mask, keep)  # 0.0 / 1.0, then the inverted-dropout scale
        self.mask *= 1.0 / (1.0 - self.dropout)
        return self.xp.multiply(a, self.mask, out=self._out[:n])

    def backward(self, dy: Any, *, fused: bool = False, need_dx: bool = True) -> Any:
        """dy = dL/d(output) (or dL/dz when `fused`); writes dW, db; returns dL/dx.

        dy is modified in place (it becomes dL/dz).
        """
        n = dy.shape[0]
        if not fused:
            if self.mask is not None:
                dy *= self.mask
            DERIVATIVES[self.activation](self.xp, self.z, self.a, dy, self._tmp[:n])
        dz = dy
        self.xp.matmul(self.x.T, dz, out=self.dW)  # dW = xᵀ dz   (fan_in, fan_out)
        if self.fan_out == 1:  # CuPy computes (1, n) @ (n, 1) through a temporary
            dz.sum(axis=0, out=self.db)
        else:
            db = self.db.reshape(1, self.fan_out)  # a view: db = Σ dz   (1, fan_out)
            self.xp.matmul(self._ones[:, :n], dz, out=db)
        if not need_dx:
            return None
        dx = self._dx[:n]
        self.xp.matmul(dz, self.W.T, out=dx)  # dx = dz Wᵀ       (n, fan_in)
        return dx


class MLP:
    """A stack of Dense layers and a loss; parameters as a flat name -> array mapping."""

    def __init__(self, xp: Any, layers: list[Dense], loss: str):
        self.xp = xp
        self.layers = layers
        self.loss = loss
        self.fused = FUSED[loss] == layers[-1].activation
        # per-class loss weights (C,) on the device (train.class_weight), or None: unweighted
        self.class_weight: Any = None
        self._grad: Any = None
        # All gradients live in one contiguous buffer (dW0, db0, dW1, ...), each layer's dW
        # and db being views of it: data-parallel training sums it with one Allreduce.
        sizes = [n for layer in layers for n in (layer.W.size, layer.b.size)]
        self.grad_flat = xp.zeros(sum(sizes), dtype=layers[0].W.dtype)
        start = 0
        for layer in layers:
            for name in ("W", "b"):
                shape = getattr(layer, name).shape
                size = getattr(layer, name).size
                setattr(layer, "d" + name, self.grad_flat[start : start + size].reshape(shape))
                start += size

    @classmethod
    def build(
        cls,
        xp: Any,
        config: Any,
        n_features: int,
        *,
        init_params: dict | None = None,
        where: str = "init_params",
    ):
        """The model of a resolved config, initialised from its seed, or from `init_params`
        (host arrays by name, "0/W", ...; a missing key or wrong shape is a CheckpointError
        that names `where`)."""
        if init_params is not None:
            check_params(init_params, param_shapes(config, n_features), where)
        check_memory(config, n_features)
        dtype = config.dtype
        layers = []
        fan_in = n_features
        for i, spec in enumerate(config.model.layers):
            if init_params is not None:
                W, b = init_params[f"{i}/W"], init_params[f"{i}/b"]
            else:
                W, b = init_layer(config.model.init, fan_in, spec.units, config.seed, i)
            W = xp.ascontiguousarray(xp.asarray(W, dtype=dtype))
            b = xp.ascontiguousarray(xp.asarray(b, dtype=dtype))
            is_output = i == len(config.model.layers) - 1
            layers.append(Dense(xp, W, b, spec.activation, spec.dropout, keep_z=is_output))
            fan_in = spec.units
        return cls(xp, layers, config.loss)

    # ------------------------------------------------------------------ parameters

    def params(self) -> dict[str, Any]:
        """Parameters by name ("0/W", "0/b", ...), the live device arrays."""
        return {f"{i}/{k}": getattr(layer, k) for i, layer in enumerate(self.layers) for k in "Wb"}

    def grads(self) -> dict[str, Any]:
        """Gradient buffers by parameter name, the live device arrays."""
        return {
            f"{i}/{k}": getattr(layer, "d" + k) for i, layer in enumerate(self.layers) for k in "Wb"
        }

    # ------------------------------------------------------------------ computation

    def forward(self, x: Any, keep: list | None = None) -> Any:
        """(n, n_features) -> (n, n_outputs): the output layer's activation.

        `keep`: per layer, a dropout keep-mask or None (see Dense.forward).
        """
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, keep[i] if keep else None)
        return x

    def _loss(self, a: Any, y: Any, grad: Any, total: Any = None) -> Any:
        """The loss of outputs a against y, its delta written into grad (see losses.py)."""
        z = self.layers[-1].z
        if self.class_weight is None:
            return LOSSES[self.loss](self.xp, z, a, y, grad)
        return LOSSES[self.loss](self.xp, z, a, y, grad, weight=self.class_weight, total=total)

    def loss_and_backward(self, a: Any, y: Any, total: Any = None) -> Any:
        """Loss of the last forward pass (0-d device array); fills every layer's dW, db.

        `total`: with class weights, the normalizer Σ w of the whole (global) batch when
        this batch is one shard of it; by default this batch's own Σ w.
        """
        out = self.layers[-1]
        n = a.shape[0]
        if self._grad is None or self._grad.shape[0] < n:
            self._grad = self.xp.empty((max(n, out._cap), out.fan_out), a.dtype)
        grad = self._grad[:n]
        loss = self._loss(a, y, grad, total)
        dy = grad
        fused = self.fused
        for i in range(len(self.layers) - 1, -1, -1):
            dy = self.layers[i].backward(dy, fused=fused, need_dx=i > 0)
            fused = False
        return loss

    def loss_value(self, x: Any, y: Any) -> Any:
        """The mean loss on (x, y) without touching the gradients (a 0-d device array)."""
        a = self.forward(x)
        return self._loss(a, y, self.xp.empty_like(a))

    def evaluate(
        self, x: Any, y: Any, batch_size: int, scale: tuple | None = None, outputs: Any = None
    ):
        """Summed loss, its normalizer and the number correct over (x, y), in batches
        (device scalars): the mean loss is loss_sum / norm, where norm is the number of
        samples, or with class weights Σ wᵢ (the loss is then Σ wᵢ lᵢ / Σ wᵢ over all of x).

        `scale` = (mean, 1 / std) standardizes each batch of raw features on the way in.
        `outputs`, an (n, n_outputs) device buffer, receives the model's outputs (for metrics
        beyond the loss), so the caller copies them to the host once.
        """
        xp = self.xp
        total = xp.zeros((), dtype=xp.float64)
        hits = xp.zeros((), dtype=xp.int64)
        weighted = self.class_weight is not None
        norm = xp.zeros((), dtype=xp.float64) if weighted else x.shape[0]
        buf = xp.empty((min(batch_size, x.shape[0]), x.shape[1]), self.layers[0].W.dtype)
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            n = xb.shape[0]
            if scale is not None:
                xb = standardize(xp, xb, scale, out=buf[:n])
            a = self.forward(xb)
            if weighted:  # Σ wᵢ lᵢ of the batch (normalizer 1), and its Σ wᵢ
                total += self._loss(a, yb, xp.empty_like(a), total=1.0)
                norm += sample_weights(xp, self.loss, yb, self.class_weight).sum()
            else:
                total += self._loss(a, yb, xp.empty_like(a)) * n
            if self.loss != "mse":
                hits += correct(xp, a, yb, self.loss)
            if outputs is not None:
                outputs[start : start + n] = a
        return total, norm, hits


def standardize(xp: Any, x: Any, scale: tuple, out: Any) -> Any:
    """(x - mean) * (1 / std) into `out` (which may be x)."""
    mean, inv_std = scale
    xp.subtract(x, mean, out=out)
    out *= inv_std
    return out


def memory_needed(config: Any, n_features: int) -> int:
    """Bytes a model of this config takes in training, beside its data: each parameter with
    its gradient, optimizer scratch and up to three state slots (and the float64 draw of
    its initial value), and the activation buffers of one batch."""
    itemsize = 4 if config.dtype == "float32" else 8
    rows = config.train.batch_size
    params = activations = 0
    for name, shape in param_shapes(config, n_features).items():
        size = math.prod(shape)
        params += size
        if name.endswith("/W"):  # z, a, dropout output and mask, scratch; dx of the inputs
            activations += rows * (5 * shape[1] + shape[0])
    return params * (7 * itemsize + 8) + activations * itemsize


def check_memory(config: Any, n_features: int) -> None:
    """A ConfigError naming the widest layer when the model cannot fit in memory."""
    need = memory_needed(config, n_features)
    if need <= memory.available_bytes():
        return
    shapes = param_shapes(config, n_features)
    widest = max(range(len(config.model.layers)), key=lambda i: math.prod(shapes[f"{i}/W"]))
    sizes = "-".join(map(str, [n_features, *(la.units for la in config.model.layers)]))
    memory.require(need, f"model.layers.{widest}.units: a {sizes} model", ConfigError)


def param_shapes(config: Any, n_features: int) -> dict[str, tuple[int, ...]]:
    """The parameter shapes of a config's model for n_features inputs."""
    shapes, fan_in = {}, n_features
    for i, spec in enumerate(config.model.layers):
        shapes[f"{i}/W"], shapes[f"{i}/b"] = (fan_in, spec.units), (spec.units,)
        fan_in = spec.units
    return shapes
