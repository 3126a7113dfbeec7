"""Checks an ONNX graph against TensorRT 10's documented ONNX operator support.
In: an onnx.ModelProto (or a path). Out: a list of `Violation`s (empty = nothing known wrong).

Source: onnx-tensorrt `docs/operators.md` for TensorRT 10.x (opsets 9..20 guaranteed since
10.0), plus the project's own rules from docs/ENVIRONMENT.md: reductions in scatters are
refused (TensorRT 8.6 silently drops the add, 10.x routes ScatterElements reductions through a
plugin, ScatterND reductions are unsupported), index_put/index_add never reach a graph.

Checked: every node's op type against `OP_TABLE` (an op missing from the table is reported, so
the table must be extended — after reading operators.md — before a new op is accepted), the
dtype of each node's data input, op restrictions (Resize modes, pooling dilations and indices,
inputs that must be build-time constants, 4D GridSample only), dtypes of every tensor (no
float64, int8 only around Q/DQ, no bool or int8/uint8 network outputs), custom domains (need a
plugin) and the opset range. Not checked: shapes, TensorRT layer precision choices, plugin
availability.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

#: Opsets TensorRT 10.0 documents as supported (later 10.x versions extend the upper end).
OPSET_RANGE = (9, 20)

_F = frozenset({"float", "float16", "bfloat16"})
_FI = _F | {"int32", "int64"}
_FIB = _FI | {"bool"}
_ANY_SUPPORTED = _FIB | {"uint8"}


@dataclass(frozen=True)
class OpRule:
    """TensorRT 10 support of one ONNX op: data-input dtypes and the restriction we check."""

    supported: bool
    types: frozenset[str]  # dtypes (onnx names) accepted on the first (data) input
    restriction: str = ""  # documented restriction, as checked by `_RESTRICTIONS`


#: The ops our graphs use (see test_deploy_onnx) and those a FlashOCC export could plausibly
#: produce, with TensorRT 10's support. Extend only after reading operators.md.
OP_TABLE: dict[str, OpRule] = {
    # --- used by graph A / graph B -------------------------------------------------------------
    "Conv": OpRule(True, _F),
    "Relu": OpRule(True, _FI),
    "MaxPool": OpRule(True, _F, "2D/3D only; no Indices output; dilations all ones"),
    "Add": OpRule(True, _FI),
    "Mul": OpRule(True, _FI),
    "Resize": OpRule(
        True,
        _F,
        "mode nearest|linear; coordinate modes half_pixel, pytorch_half_pixel, "
        "tf_half_pixel_for_nn, asymmetric, align_corners; nearest modes floor, ceil, "
        "round_prefer_floor, round_prefer_ceil; no antialias; aspect policy stretch",
    ),
    "Concat": OpRule(True, _FIB),
    "Softmax": OpRule(True, _F),
    "Slice": OpRule(True, _FIB),
    "Transpose": OpRule(True, _FIB),
    "Reshape": OpRule(True, _FIB),
    "MatMul": OpRule(True, _F),
    "Gemm": OpRule(True, _F),
    "Softplus": OpRule(True, _F),
    "Constant": OpRule(True, _FIB, "no sparse_value / string values"),
    "Identity": OpRule(True, _FIB),
    "Shape": OpRule(True, _FIB),
    "Gather": OpRule(True, _FIB),
    "Unsqueeze": OpRule(True, _FIB),
    "Squeeze": OpRule(True, _FIB),
    "Split": OpRule(True, _FIB),
    "Cast": OpRule(True, _ANY_SUPPORTED, "target type must be a TensorRT type"),
    # --- used by the 4D-stereo graphs (cost volume, camera-aware DepthNet) ---------------------
    "GridSample": OpRule(True, frozenset({"float", "float16"}), "4D input (and grid) only"),
    "Abs": OpRule(True, _FI),
    "Neg": OpRule(True, _FI),
    "Equal": OpRule(True, _FI),
    "Sigmoid": OpRule(True, _F),
    "BatchNormalization": OpRule(True, _F),
    "GlobalAveragePool": OpRule(True, _F),
    # --- plausible in variants -----------------------------------------------------------------
    "AveragePool": OpRule(True, _F, "2D/3D only; dilations all ones"),
    "Sub": OpRule(True, _FI),
    "Div": OpRule(True, _FI),
    "Pad": OpRule(True, _FI),
    "Flatten": OpRule(True, _FIB),
    "Expand": OpRule(True, _FIB),
    "ConstantOfShape": OpRule(True, _FIB),
    "Where": OpRule(True, _FIB),
    "ArgMax": OpRule(True, _FI),
    "ReduceSum": OpRule(True, _FI, "axes must be a build-time constant"),
    "ReduceMean": OpRule(True, _FI, "axes must be a build-time constant"),
    "ReduceMax": OpRule(True, _FI, "axes must be a build-time constant"),
    "CumSum": OpRule(True, _F, "axis must be a build-time constant"),
    "GatherElements": OpRule(True, _FIB),
    "GatherND": OpRule(True, _FIB),
    "Scatter": OpRule(True, _FI),
    "ScatterElements": OpRule(True, _FI, "reduction must be none (project rule)"),
    "ScatterND": OpRule(True, _FI, "reduction other than none is not supported"),
    "TopK": OpRule(True, _F, "K must be a build-time constant"),
    "QuantizeLinear": OpRule(True, _F, "y_zero_point must be 0"),
    "DequantizeLinear": OpRule(True, frozenset({"int8", "float8e4m3fn", "int4"})),
    # --- not supported by TensorRT 10 ----------------------------------------------------------
    "Unique": OpRule(False, frozenset()),
    "Compress": OpRule(False, frozenset()),
    "SequenceConstruct": OpRule(False, frozenset()),
    "SequenceAt": OpRule(False, frozenset()),
    "ConcatFromSequence": OpRule(False, frozenset()),
    "Det": OpRule(False, frozenset()),
    "MatMulInteger": OpRule(False, frozenset()),
    "ConvInteger": OpRule(False, frozenset()),
}


@dataclass(frozen=True)
class Violation:
    """One thing TensorRT 10 would reject or compute differently."""

    node: str  # node name ("" for graph-level findings)
    op_type: str  # "" for graph-level findings
    reason: str

    def __str__(self) -> str:
        where = f"{self.op_type} {self.node!r}: " if self.op_type else ""
        return where + self.reason


def _dtype_name(elem_type: int) -> str:
    """ONNX element type -> lower-case ONNX name ("float", "double", "int64", "bool", ...)."""
    name: str = TensorProto.DataType.Name(elem_type).lower()
    return name


class _Graph:
    """Name -> dtype and constant lookups of one (shape-inferred) graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.dtypes: dict[str, str] = {}
        self.ranks: dict[str, int] = {}
        for vi in [*g.input, *g.value_info, *g.output]:
            if vi.type.HasField("tensor_type"):
                self.dtypes[vi.name] = _dtype_name(vi.type.tensor_type.elem_type)
                if vi.type.tensor_type.HasField("shape"):
                    self.ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
        for init in g.initializer:
            self.dtypes[init.name] = _dtype_name(init.data_type)
        self.constants = {init.name for init in g.initializer}
        for node in g.node:
            if node.op_type == "Constant":
                self.constants.update(node.output)
                for attr in node.attribute:
                    if attr.name == "value":
                        self.dtypes[node.output[0]] = _dtype_name(attr.t.data_type)
        self.outputs = [o.name for o in g.output]
        self.dq_inputs = {n.input[0] for n in g.node if n.op_type == "DequantizeLinear"}
        self.q_outputs = {n.output[0] for n in g.node if n.op_type == "QuantizeLinear"}


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _resize(node: onnx.NodeProto, g: _Graph) -> list[str]:
    a = _attrs(node)
    out = []
    mode = _text(a.get("mode", "nearest"))
    if mode not in ("nearest", "linear"):
        out.append(f"mode {mode!r} not supported (nearest, linear)")
    ctm = _text(a.get("coordinate_transformation_mode", "half_pixel"))
    ok_ctm = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric")
    if ctm not in (*ok_ctm, "align_corners"):
        out.append(f"coordinate_transformation_mode {ctm!r} not supported")
    nearest = _text(a.get("nearest_mode", "round_prefer_floor"))
    if mode == "nearest" and nearest not in (
        "floor",
        "ceil",
        "round_prefer_floor",
        "round_prefer_ceil",
    ):
        out.append(f"nearest_mode {nearest!r} not supported")
    if int(a.get("antialias", 0)):
        out.append("antialias not supported")
    if _text(a.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
        out.append("keep_aspect_ratio_policy must be stretch")
    return out


def _pool(node: onnx.NodeProto, g: _Graph) -> list[str]:
    a = _attrs(node)
    out = []
    if len(a.get("kernel_shape", [])) not in (2, 3):
        out.append("only 2D or 3D pooling")
    if any(int(d) != 1 for d in a.get("dilations", [])):
        out.append("dilations must be all ones")
    if len(node.output) > 1 and node.output[1]:
        out.append("Indices output not supported")
    return out


def _scatter(node: onnx.NodeProto, g: _Graph) -> list[str]:
    reduction = _text(_attrs(node).get("reduction", "none"))
    if reduction != "none":
        return [
            f"reduction={reduction!r}: not computed by TensorRT core (8.6 silently drops it, "
            "10.x needs a plugin or rejects it); pool outside the graph instead"
        ]
    return []


def _constant_input(index: int, what: str) -> Callable[[onnx.NodeProto, _Graph], list[str]]:
    def check(node: onnx.NodeProto, g: _Graph) -> list[str]:
        if len(node.input) > index and node.input[index] and node.input[index] not in g.constants:
            return [f"{what} must be a build-time constant (initializer or Constant)"]
        return []

    return check


def _grid_sample(node: onnx.NodeProto, g: _Graph) -> list[str]:
    """operators.md (TensorRT 10.x): GridSample FP32/FP16, "Input must be 4D input" (the
    parser also rejects a 5D volumetric grid). Ranks unknown after shape inference pass."""
    out = []
    for what, name in zip(("input X", "grid"), node.input, strict=False):
        rank = g.ranks.get(name)
        if rank is not None and rank != 4:
            out.append(f"{what} is {rank}D: TensorRT supports 4D GridSample only")
    return out


def _cast(node: onnx.NodeProto, g: _Graph) -> list[str]:
    to = _dtype_name(int(_attrs(node).get("to", 0)))
    return [] if to in _ANY_SUPPORTED else [f"cast to {to} is not a TensorRT type"]


_RESTRICTIONS: dict[str, Callable[[onnx.NodeProto, _Graph], list[str]]] = {
    "Resize": _resize,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "ScatterElements": _scatter,
    "ScatterND": _scatter,
    "Scatter": _scatter,
    "ReduceSum": _constant_input(1, "axes"),
    "ReduceMean": _constant_input(1, "axes"),  # opset >= 18 only; attribute before
    "ReduceMax": _constant_input(1, "axes"),
    "CumSum": _constant_input(1, "axis"),
    "TopK": _constant_input(1, "K"),
    "Cast": _cast,
    "GridSample": _grid_sample,
}


def _tensor_dtype_violations(g: _Graph) -> list[Violation]:
    out = []
    for name, dtype in sorted(g.dtypes.items()):
        if dtype == "double":
            out.append(
                Violation(name, "", f"tensor {name!r} is float64 (TensorRT clamps to fp32)")
            )
        elif dtype in ("int8",) and name not in g.dq_inputs | g.q_outputs:
            out.append(Violation(name, "", f"tensor {name!r} is int8 outside Q/DQ"))
        elif dtype not in _ANY_SUPPORTED | {"int8", "undefined"}:
            out.append(Violation(name, "", f"tensor {name!r} has unsupported dtype {dtype}"))
    for name in g.outputs:
        if g.dtypes.get(name) in ("bool", "int8", "uint8"):
            out.append(Violation(name, "", f"network output {name!r} is {g.dtypes[name]}"))
    return out


def check_trt_compat(model: onnx.ModelProto | str | Path) -> list[Violation]:
    """Everything in `model` that TensorRT 10 would reject or compute differently (by the
    table above; an empty list means no known problem, not a guarantee the engine builds)."""
    proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
    proto = onnx.shape_inference.infer_shapes(proto)
    g = _Graph(proto)
    found: list[Violation] = []
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            lo, hi = OPSET_RANGE
            if not lo <= opset.version <= hi:
                found.append(Violation("", "", f"opset {opset.version} outside {lo}..{hi}"))
    for i, node in enumerate(proto.graph.node):
        name = node.name or f"#{i}"
        if node.domain not in ("", "ai.onnx"):
            found.append(Violation(name, node.op_type, f"custom domain {node.domain!r}: plugin"))
            continue
        rule = OP_TABLE.get(node.op_type)
        if rule is None:
            found.append(Violation(name, node.op_type, "not in OP_TABLE (check operators.md)"))
            continue
        if not rule.supported:
            found.append(Violation(name, node.op_type, "not supported by TensorRT 10"))
            continue
        data = node.input[0] if node.input else ""
        dtype = g.dtypes.get(data)
        if dtype is not None and dtype != "undefined" and dtype not in rule.types:
            found.append(Violation(name, node.op_type, f"input dtype {dtype} not supported"))
        check = _RESTRICTIONS.get(node.op_type)
        for reason in check(node, g) if check else []:
            found.append(Violation(name, node.op_type, reason))
    return found + _tensor_dtype_violations(g)
