"""The model as a graph for TensorBoard's Graphs tab: `graph_def` builds the MLP as a
tensorboardX GraphDef, one node per op, op names drawn from the activation and loss names.
Nothing here writes; `TBLogger.graph` does.
"""

from __future__ import annotations

from mlpcli.activations import ACTIVATIONS, LEAKY_SLOPE
from mlpcli.losses import LOSSES
from mlpcli.tblog.writer import _summary_writer_class

# Op names shown in TensorBoard's Graphs tab (TensorFlow's where TensorFlow has one). Every
# other activation or loss draws as the CamelCase of its name (leaky_relu -> LeakyRelu), so a
# name added to its registry needs an entry here only if TensorFlow calls the op otherwise.
_OPS = {
    "linear": "Identity",
    "cross_entropy": "SoftmaxCrossEntropy",
    "binary_cross_entropy": "SigmoidCrossEntropy",
    "mse": "MeanSquaredError",
}


def _op_name(name: str) -> str:
    """The op drawn for an activation or loss: `_OPS[name]`, else its name in CamelCase."""
    return _OPS.get(name) or "".join(word.capitalize() for word in name.split("_"))


def graph_def(
    sizes: list[int],
    activations: list[str],
    loss: str,
    *,
    dtype: str = "float32",
    dropouts: list[float] | None = None,
):
    """The MLP as a tensorboardX GraphDef: what TensorBoard's Graphs tab draws.

    `sizes` = [n_features, units of layer 0, ..., units of the output layer]; `activations`
    and `dropouts` (optional, a `Dropout` node where > 0) have one entry per layer. Nodes:
    `input`, then per layer i the scope `layer{i}/` with `W`, `b`, `MatMul`, `BiasAdd` and the
    activation op, then `loss/labels` and the loss op. The cross-entropies read the logits
    (BiasAdd), as losses.py computes them; mse reads the output. Every node has `dtype` and
    `_output_shapes` (batch dimension -1), which the Graphs tab shows on the edges.
    """
    n_layers = len(sizes) - 1
    if n_layers < 1 or len(activations) != n_layers:
        raise ValueError(
            f"graph_def: expected sizes [n_features, units...] and one activation per layer, "
            f"got {len(sizes)} sizes and {len(activations)} activations"
        )
    dropouts = list(dropouts) if dropouts is not None else [0.0] * n_layers
    if len(dropouts) != n_layers:
        raise ValueError(f"graph_def: {n_layers} layers but {len(dropouts)} dropout rates")
    unknown = [a for a in activations if a not in ACTIVATIONS]
    if unknown or loss not in LOSSES:
        raise ValueError(
            f"graph_def: unknown activation(s) {unknown} or loss {loss!r}; "
            f"choose from {sorted(ACTIVATIONS)} and {sorted(LOSSES)}"
        )

    _summary_writer_class()  # tensorboardX itself, imported without torch
    from tensorboardX.proto import types_pb2
    from tensorboardX.proto.graph_pb2 import GraphDef
    from tensorboardX.proto.node_def_pb2 import NodeDef
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboardX.proto.versions_pb2 import VersionDef

    real = {"float32": types_pb2.DT_FLOAT, "float64": types_pb2.DT_DOUBLE}[dtype]
    nodes = []

    def add(name, op, inputs, shape, dt=real, **attrs):
        node = NodeDef(name=name, op=op, input=inputs)
        node.attr["dtype"].type = dt
        node.attr["_output_shapes"].list.shape.append(
            TensorShapeProto(dim=[TensorShapeProto.Dim(size=d) for d in shape])
        )
        for key, value in attrs.items():  # floats only so far (LeakyRelu's alpha, a rate)
            node.attr[key].f = value
        nodes.append(node)
        return name

    x = add("input", "Placeholder", [], [-1, sizes[0]])
    nodes[-1].attr["shape"].shape.CopyFrom(nodes[-1].attr["_output_shapes"].list.shape[0])
    logits = x
    for i, activation in enumerate(activations):
        fan_in, fan_out = sizes[i], sizes[i + 1]
        scope = f"layer{i}/"
        W = add(scope + "W", "Variable", [], [fan_in, fan_out])
        b = add(scope + "b", "Variable", [], [fan_out])
        z = add(scope + "MatMul", "MatMul", [x, W], [-1, fan_out])
        logits = add(scope + "BiasAdd", "BiasAdd", [z, b], [-1, fan_out])
        op = _op_name(activation)
        extra = {"alpha": LEAKY_SLOPE} if activation == "leaky_relu" else {}
        x = add(scope + op, op, [logits], [-1, fan_out], **extra)
        if dropouts[i] > 0:
            x = add(scope + "Dropout", "Dropout", [x], [-1, fan_out], rate=float(dropouts[i]))

    n_out = sizes[-1]
    if loss == "cross_entropy":  # class indices
        labels = add("loss/labels", "Placeholder", [], [-1], dt=types_pb2.DT_INT64)
    else:  # 0/1 column (binary), or targets (regression)
        labels = add("loss/labels", "Placeholder", [], [-1, 1 if loss != "mse" else n_out])
    nodes[-1].attr["shape"].shape.CopyFrom(nodes[-1].attr["_output_shapes"].list.shape[0])
    prediction = x if loss == "mse" else logits
    op = _op_name(loss)
    add("loss/" + op, op, [prediction, labels], [])
    return GraphDef(node=nodes, versions=VersionDef(producer=22))
