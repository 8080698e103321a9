"""Optimizers with `torch.optim`'s update rules, updating parameters in place.

`params` maps names ("0/W", "0/b") to arrays of the run's array module `xp` (numpy or
cupy). `step(grads, lr)` takes the learning rate each time, so a schedule stays a pure
function of the step. This is the hot path: every parameter owns one preallocated scratch
buffer (`buf`), the math is in-place ufuncs with `out=`, and scalar factors are Python
floats, so a step allocates nothing. Gradients are only read: they are the model's
buffers, reused next step.

Weight decay applies to weights (2-D), not biases (1-D): added to the gradient (coupled)
for sgd, adam, rmsprop and adagrad; decoupled, `p *= 1 - lr * weight_decay`, for adamw.
The options' defaults are torch.optim's, written once in `optim_options.py`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mlpcli.backend import to_host
from mlpcli.errors import CheckpointError
from mlpcli.optim_options import OPTIMIZER_OPTIONS

if TYPE_CHECKING:  # for annotations only: the math gets its array module as `xp`
    import numpy as np

Array = Any  # a numpy.ndarray or cupy.ndarray


class Optimizer:
    """Base: `params` maps names to arrays that `step` updates in place."""

    name = ""
    slots: tuple[str, ...] = ()  # state slots; each subclass keeps only those its options use
    decoupled = False  # weight decay shrinks p (AdamW) instead of joining the gradient

    def __init__(self, params: dict[str, Array], xp: Any, weight_decay: float = 0.0):
        self.params, self.xp = params, xp
        self.weight_decay = float(weight_decay)
        self.t = 0  # steps taken (torch's `step`): bias corrections and lr decay use it
        self.state = {n: {s: xp.zeros_like(p) for s in self.slots} for n, p in params.items()}
        self.buf = {n: xp.empty_like(p) for n, p in params.items()}
        # coupled decay needs the decayed gradient g + wd * p kept while buf does other work
        decays = self.weight_decay != 0 and not self.decoupled
        self.decayed = {n: xp.empty_like(p) for n, p in params.items() if decays and p.ndim == 2}

    def step(self, grads: dict[str, Array], lr: float) -> None:
        """One update of every parameter with learning rate `lr`."""
        self.t += 1
        wd = self.weight_decay
        for name, p in self.params.items():
            g = grads[name]
            if wd and p.ndim == 2:
                if self.decoupled:
                    p *= 1.0 - lr * wd
                else:
                    g = self.xp.multiply(p, wd, out=self.decayed[name])
                    g += grads[name]
            self._update(p, g, self.buf[name], lr, **self.state[name])

    def _update(self, p: Array, g: Array, buf: Array, lr: float, **slots: Array) -> None:
        """Update one parameter `p` from its gradient `g`, using scratch `buf` and its slots."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of the state: "{name}/{slot}" -> array, and "step" -> 0-d int64."""
        state = {
            f"{name}/{slot}": to_host(a).copy()
            for name, slots in self.state.items()
            for slot, a in slots.items()
        }
        state["step"] = to_host(self.xp.asarray(self.t, dtype="int64"))
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy a `state_dict()` into the device buffers; strict about keys, shapes and types."""
        shapes = {"step": ()}
        for name, slots in self.state.items():
            shapes.update({f"{name}/{slot}": tuple(a.shape) for slot, a in slots.items()})
        host = {k: to_host(v) for k, v in state.items()}
        missing = [k for k in shapes if k not in host]
        unexpected = [k for k in host if k not in shapes]
        problems = [f"missing {', '.join(missing)}"] if missing else []
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected)}")
        for key, a in host.items():
            if key not in shapes:
                continue
            if a.shape != shapes[key]:
                problems.append(f"{key} has shape {a.shape}, expected {shapes[key]}")
            elif a.dtype.kind not in ("iu" if key == "step" else "iuf"):
                problems.append(f"{key} holds {a.dtype}, expected numbers")
            elif key == "step" and a < 0:
                problems.append(f"step is {int(a)}, expected >= 0")
        if problems:
            raise CheckpointError(
                f"{self.name} optimizer state does not fit: {'; '.join(problems)}"
            )
        for name, slots in self.state.items():
            for slot, a in slots.items():
                a[...] = self.xp.asarray(host[f"{name}/{slot}"])
        self.t = int(host["step"])


class SGD(Optimizer):
    """p -= lr * d for d = g + wd * p; with momentum, b = momentum * b + (1 - dampening) * d
    (b = d at the first step) and then d = b, or d = d + momentum * b with nesterov."""

    name = "sgd"

    def __init__(self, params, xp, *, momentum, dampening, nesterov, weight_decay):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires a momentum and zero dampening")
        self.momentum, self.dampening, self.nesterov = (
            float(momentum),
            float(dampening),
            bool(nesterov),
        )
        self.slots = ("momentum_buffer",) if momentum else ()
        super().__init__(params, xp, weight_decay)

    def _update(self, p, g, buf, lr, momentum_buffer=None):
        xp = self.xp
        if momentum_buffer is not None:
            if self.t == 1:
                momentum_buffer[...] = g  # torch starts the buffer at the first gradient
            else:
                momentum_buffer *= self.momentum
                if self.dampening:
                    momentum_buffer += xp.multiply(g, 1.0 - self.dampening, out=buf)
                else:
                    momentum_buffer += g
            if self.nesterov:
                d = xp.multiply(momentum_buffer, self.momentum, out=buf)
                d += g
                g = d
            else:
                g = momentum_buffer
        p -= xp.multiply(g, lr, out=buf)


class Adam(Optimizer):
    """m = b1 * m + (1 - b1) * g, v = b2 * v + (1 - b2) * g**2 (g = grad + wd * p), and
    p -= lr / (1 - b1**t) * m / (sqrt(v / (1 - b2**t)) + eps); amsgrad uses max(v) so far."""

    name = "adam"

    def __init__(self, params, xp, *, betas, eps, weight_decay, amsgrad):
        self.beta1, self.beta2 = map(float, betas)
        self.eps = float(eps)
        self.slots = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())
        super().__init__(params, xp, weight_decay)

    def _update(self, p, g, buf, lr, exp_avg, exp_avg_sq, max_exp_avg_sq=None):
        xp, b1, b2 = self.xp, self.beta1, self.beta2
        exp_avg *= b1
        exp_avg += xp.multiply(g, 1.0 - b1, out=buf)
        exp_avg_sq *= b2
        xp.multiply(g, g, out=buf)
        buf *= 1.0 - b2
        exp_avg_sq += buf
        if max_exp_avg_sq is not None:
            exp_avg_sq = xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        # torch's formula with the bias corrections moved into two scalars (one pass less):
        # lr / c1 * m / (sqrt(v) / c2 + eps) = (lr * c2 / c1) * m / (sqrt(v) + eps * c2)
        c1, c2 = 1.0 - b1**self.t, math.sqrt(1.0 - b2**self.t)
        xp.sqrt(exp_avg_sq, out=buf)
        buf += self.eps * c2
        xp.divide(exp_avg, buf, out=buf)
        buf *= lr * c2 / c1
        p -= buf


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * wd before the Adam update."""

    name = "adamw"
    decoupled = True


class RMSprop(Optimizer):
    """s = alpha * s + (1 - alpha) * g**2 (g = grad + wd * p), d = g / (sqrt(s) + eps) and
    p -= lr * d; centered subtracts the mean gradient's square from s (s - a**2, with
    a = alpha * a + (1 - alpha) * g); momentum uses b = momentum * b + d in place of d."""

    name = "rmsprop"

    def __init__(self, params, xp, *, alpha, eps, weight_decay, momentum, centered):
        self.alpha, self.eps, self.momentum = float(alpha), float(eps), float(momentum)
        self.slots = (
            ("square_avg",)
            + (("momentum_buffer",) if momentum > 0 else ())
            + (("grad_avg",) if centered else ())
        )
        super().__init__(params, xp, weight_decay)

    def _update(self, p, g, buf, lr, square_avg, momentum_buffer=None, grad_avg=None):
        xp, alpha = self.xp, self.alpha
        square_avg *= alpha
        xp.multiply(g, g, out=buf)
        buf *= 1.0 - alpha
        square_avg += buf
        if grad_avg is not None:
            grad_avg *= alpha
            grad_avg += xp.multiply(g, 1.0 - alpha, out=buf)
            xp.multiply(grad_avg, grad_avg, out=buf)
            xp.subtract(square_avg, buf, out=buf)
            xp.sqrt(buf, out=buf)
        else:
            xp.sqrt(square_avg, out=buf)
        buf += self.eps
        d = xp.divide(g, buf, out=buf)
        if momentum_buffer is not None:
            momentum_buffer *= self.momentum
            momentum_buffer += d
            d = momentum_buffer
        p -= xp.multiply(d, lr, out=buf)


class Adagrad(Optimizer):
    """s += g**2 (g = grad + wd * p; s starts at initial_accumulator_value) and
    p -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)."""

    name = "adagrad"
    slots = ("sum",)

    def __init__(self, params, xp, *, lr_decay, eps, weight_decay, initial_accumulator_value):
        self.lr_decay, self.eps = float(lr_decay), float(eps)
        super().__init__(params, xp, weight_decay)
        for slots in self.state.values():
            slots["sum"].fill(initial_accumulator_value)

    def _update(self, p, g, buf, lr, sum):  # `sum`: torch's slot name
        xp = self.xp
        sum += xp.multiply(g, g, out=buf)
        xp.sqrt(sum, out=buf)
        buf += self.eps
        xp.divide(g, buf, out=buf)
        buf *= lr / (1.0 + (self.t - 1) * self.lr_decay)
        p -= buf


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Adam, AdamW, RMSprop, Adagrad)
}


def build_optimizer(name: str, params: dict[str, Array], xp: Any, **options: Any) -> Optimizer:
    """The optimizer `name` ("sgd", "adam", ...) over `params`; options left out take
    torch.optim's defaults (OPTIMIZER_OPTIONS)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, xp, **{**OPTIMIZER_OPTIONS[name], **options})
