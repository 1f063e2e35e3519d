"""An ONNX source: a float classifier (NCHW float image in, [batch, classes] out) checked and
wrapped with the same uint8 NHWC front the torch sources get (build/graph.py), so the service
feeds every model the same way.

Checks, each with its reason: one 4-D float input with 3 channels first, one output of rank 2,
a batch axis that really is dynamic (a graph traced at batch 1 often hard-codes it), at least
two classes. Graphs below opset 13 are converted: ORT's per-channel QDQ needs 13, and merely
relabelling the opset (what the quantizer would do) changes the meaning of several operators.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from build.errors import SourceError
from build.export import INPUT_NAME, OUTPUT_NAME
from build.sessions import session

MIN_OPSET = 13
_PREFIX = "net/"  # every name of the user's graph, so none collides with the front's


@dataclass(frozen=True, slots=True)
class OnnxSummary:
    input_name: str
    input_shape: tuple[int | str, ...]
    output_name: str
    opset: int
    producer: str

    def describe(self) -> str:
        shape = "x".join(str(d) for d in self.input_shape)
        made = f", made by {self.producer}" if self.producer else ""
        return f"ONNX opset {self.opset}{made}, input {self.input_name!r} [{shape}]"


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def _elem(value: onnx.ValueInfoProto) -> str:
    return str(TensorProto.DataType.Name(value.type.tensor_type.elem_type))


def load(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf, checker and I/O errors all mean "not a usable model"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"{path} is not a valid ONNX model: {first}") from exc
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def summarize(model: onnx.ModelProto, path: Path, crop: int) -> OnnxSummary:
    """Refuse a graph that is not an image classifier, with the reason."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    where = f"{path} is not an image classifier the build can serve"
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise SourceError(f"{where}: it takes {len(inputs)} inputs ({names}); it must take one")
    image = inputs[0]
    dims = _dims(image)
    if _elem(image) != "FLOAT":
        raise SourceError(
            f"{where}: its input {image.name!r} is {_elem(image)}; it must be float32 (NCHW)"
        )
    if len(dims) != 4:
        raise SourceError(
            f"{where}: its input {image.name!r} has shape {list(dims)}, not 4-D; it must be "
            "[batch, 3, height, width]"
        )
    if dims[1] != 3 and not isinstance(dims[1], str):
        hint = " (it looks NHWC: export NCHW)" if dims[3] == 3 else ""
        raise SourceError(f"{where}: its input {image.name!r} has {dims[1]} channels{hint}")
    for axis, size in (("height", dims[2]), ("width", dims[3])):
        if isinstance(size, int) and size != crop:
            raise SourceError(
                f"{where}: its input's {axis} is fixed at {size}, but [preprocess] crop is "
                f"{crop}: set crop = {size}"
            )
    if len(graph.output) != 1:
        names = ", ".join(repr(o.name) for o in graph.output)
        raise SourceError(
            f"{where}: it has {len(graph.output)} outputs ({names}); a classifier has one, "
            "[batch, classes]"
        )
    out = graph.output[0]
    out_dims = _dims(out)
    if out_dims and len(out_dims) != 2:
        raise SourceError(
            f"{where}: its output {out.name!r} has shape {list(out_dims)}; a classifier's is "
            "[batch, classes] (a detector or a segmenter is not served here)"
        )
    return OnnxSummary(image.name, dims, out.name, _opset(model), model.producer_name)


def loadable(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with the lowest IR version its opsets need: a newer onnx package writes
    an IR version ONNX Runtime may not read yet, though it runs every operator in the graph."""
    lowest = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if model.ir_version > lowest:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.ir_version = lowest
    return model


def _upgrade(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    if _opset(model) >= MIN_OPSET:
        return model
    try:
        converted: onnx.ModelProto = onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises RuntimeError or ValueError by op
        raise SourceError(
            f"{path}: opset {_opset(model)} could not be converted to {MIN_OPSET} ({exc}); "
            f"export with opset >= {MIN_OPSET}"
        ) from exc
    return converted


def _front(
    crop: int, net_input: str, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """uint8 NHWC -> float NCHW, normalised: (x - 255 mean) * 1/(255 std), as graph.py does."""
    offset = np.array([255.0 * m for m in mean], np.float32).reshape(1, 3, 1, 1)
    scale = np.array([1.0 / (255.0 * s) for s in std], np.float32).reshape(1, 3, 1, 1)
    inits = [
        numpy_helper.from_array(offset, "imgcls_front/offset"),
        numpy_helper.from_array(scale, "imgcls_front/scale"),
    ]
    nodes = [
        helper.make_node("Transpose", [INPUT_NAME], ["imgcls_front/nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["imgcls_front/nchw"], ["imgcls_front/float"], to=1),
        helper.make_node(
            "Sub", ["imgcls_front/float", "imgcls_front/offset"], ["imgcls_front/centred"]
        ),
        helper.make_node("Mul", ["imgcls_front/centred", "imgcls_front/scale"], [net_input]),
    ]
    return nodes, inits


def _back(net_output: str, probabilities: bool) -> list[onnx.NodeProto]:
    if not probabilities:
        return [helper.make_node("Identity", [net_output], [OUTPUT_NAME])]
    # log(p) as logits: the service's softmax gives p back. The floor keeps log finite.
    return [
        helper.make_node(
            "Constant",
            [],
            ["imgcls_back/floor"],
            value=numpy_helper.from_array(np.array(1e-30, np.float32)),
        ),
        helper.make_node("Max", [net_output, "imgcls_back/floor"], ["imgcls_back/p"]),
        helper.make_node("Log", ["imgcls_back/p"], [OUTPUT_NAME]),
    ]


def wrap(
    model: onnx.ModelProto,
    summary: OnnxSummary,
    crop: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    probabilities: bool,
    path: Path,
) -> onnx.ModelProto:
    """The user's graph behind the uint8 NHWC front, output renamed to logits, batch dynamic."""
    model = onnx.compose.add_prefix(loadable(_upgrade(model, path)), _PREFIX)
    graph = model.graph
    net_input, net_output = _PREFIX + summary.input_name, _PREFIX + summary.output_name
    nodes, inits = _front(crop, net_input, mean, std)
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *body, *_back(net_output, probabilities)])
    graph.initializer.extend(inits)
    kept = [i for i in graph.input if i.name != net_input]
    del graph.input[:]
    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", crop, crop, 3])
    graph.input.extend([image, *kept])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, None))
    # Shapes inferred for batch 1 at export would contradict a dynamic batch: infer anew.
    del graph.value_info[:]
    try:
        inferred: onnx.ModelProto = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(inferred, full_check=True)
    except Exception as exc:  # shape-inference errors name the node at fault
        raise SourceError(f"{path}: the wrapped graph does not check: {exc}") from exc
    return inferred


def check_runs(
    wrapped: Path, pixels: npt.NDArray[np.uint8], labels: int, path: Path
) -> npt.NDArray[np.float32]:
    """Run the wrapped graph at batch 1 and at batch 2: the output count must be the labels',
    and a batch must give what its images give alone. Returns the batch's logits."""
    sess = session(wrapped)
    two = pixels[:2] if len(pixels) >= 2 else np.concatenate([pixels[:1], pixels[:1]])
    try:
        alone = np.concatenate([_run(sess, two[i : i + 1]) for i in (0, 1)])
    except Exception as exc:  # ORT's errors carry the failing node
        size = f"{two.shape[1]}x{two.shape[2]}"
        raise SourceError(f"{path} does not run on a {size} image: {exc}") from exc
    if alone.ndim != 2:
        raise SourceError(
            f"{path} is not an image classifier the build can serve: it outputs shape "
            f"{list(alone.shape)} per batch of 2; a classifier's is [batch, classes]"
        )
    if alone.shape[1] != labels:
        raise SourceError(
            f"{path} outputs {alone.shape[1]} classes but the labels file has {labels} labels"
        )
    try:
        batched = _run(sess, two)
    except Exception as exc:
        raise SourceError(
            f"{path} runs at batch 1 only ({str(exc).splitlines()[0]}): re-export it with a "
            "dynamic batch axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))"
        ) from exc
    if batched.shape != alone.shape or not np.allclose(batched, alone, rtol=1e-3, atol=1e-3):
        raise SourceError(
            f"{path} runs at batch 1 only (a batch of 2 gives shape {list(batched.shape)} or "
            "other values than its images alone): re-export it with a dynamic batch axis"
        )
    return batched


def _run(sess: Any, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = sess.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]
    return out


def compare_with_original(
    original: onnx.ModelProto,
    wrapped_logits: npt.NDArray[np.float32],
    pixels: npt.NDArray[np.uint8],
    summary: OnnxSummary,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    probabilities: bool,
) -> float:
    """max |original - wrapped| on real images: the front, the opset conversion and the
    renaming changed nothing (the export check of an ONNX source)."""
    x = pixels.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    x = (x - np.array(mean, np.float32).reshape(1, 3, 1, 1)) / np.array(std, np.float32).reshape(
        1, 3, 1, 1
    )
    with tempfile.TemporaryDirectory(prefix="imgcls-onnx-") as tmp:
        path = Path(tmp) / "source.onnx"
        onnx.save(loadable(original), str(path))
        sess = session(path)
    expected = np.concatenate(
        [
            sess.run([summary.output_name], {summary.input_name: x[i : i + 1]})[0]
            for i in range(len(x))
        ]
    )
    if probabilities:
        expected = np.log(np.maximum(expected, 1e-30))
    return float(np.max(np.abs(expected - wrapped_logits)))
