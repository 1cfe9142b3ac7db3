"""The ONNX operators TensorRT's ONNX parser supports, as data for the
TensorRT-readiness test of the exported graphs (issue 20 item 5).

Source: ``docs/operators.md`` of https://github.com/onnx/onnx-tensorrt at
commit 96e781103cfc ("ONNX-TensorRT 10.1 GA release", branch
``release/10.1-GA``, 2024-06-17), whose header reads "TensorRT 10.0 supports
operators in the inclusive range of opset 9 to opset 20". Only the names
marked "Y" in its support matrix are kept here (150 operators); the
types of the support matrix are in :data:`SUPPORTED_TYPES`, and
:func:`tensorrt_problems` checks a graph against them and the restrictions
an exported graph can break.
"""
from typing import Dict, List, Optional

import numpy as np

SOURCE = ('onnx/onnx-tensorrt docs/operators.md @ 96e781103cfc '
          '(release/10.1-GA)')
MAX_OPSET = 20
# TopK's K must be below this (the matrix's TopK restriction).
TOPK_LIMIT = 3840

SUPPORTED_OPS = frozenset("""
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh
    AveragePool BatchNormalization Cast CastLike Ceil Celu Clip Concat
    Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu
    Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements
    GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid
    HardSwish Hardmax Identity If ImageScaler InstanceNormalization
    IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less LessOrEqual
    Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean
    MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression
    NonZero Not OneHot Or PRelu Pad ParametricSoftplus Pow
    QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
    ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign Round
    ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
    Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
    SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu
    Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# The matrix's "Supported Types" column: the type of an op's data input
# (``Where``: its values; the matrix's "INF64" for ConstantOfShape read as
# INT64), as (types, ops) groups.
_TYPE_GROUPS = (
    (('FP32', 'FP16', 'BF16', ),
     'Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization '
     'Ceil Celu Clip Conv ConvTranspose Cos Cosh CumSum Dropout Einsum '
     'Elu Erf Exp Floor GRU Gemm GlobalAveragePool GlobalLpPool '
     'GlobalMaxPool GroupNormalization HardSigmoid HardSwish Hardmax '
     'ImageScaler InstanceNormalization IsInf LRN LSTM '
     'LayerNormalization LeakyRelu Log LogSoftmax LpNormalization '
     'LpPool MatMul MaxPool MeanVarianceNormalization PRelu '
     'ParametricSoftplus Pow QuantizeLinear RNN RandomNormal '
     'RandomNormalLike RandomUniform RandomUniformLike Reciprocal '
     'Resize Round ScaledTanh Scan Selu Sigmoid Sin Sinh Softmax '
     'Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample'),
    (('FP32', 'FP16', 'BF16', 'INT32', 'INT64', ),
     'Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater '
     'GreaterOrEqual IsNaN Less LessOrEqual Max Min Mod Mul Neg Pad '
     'Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax '
     'ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu '
     'Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth Sub '
     'Sum TopK'),
    (('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL', ),
     'Concat Constant ConstantOfShape Expand EyeLike Flatten Gather '
     'GatherElements GatherND Identity If Loop OneHot Reshape '
     'ReverseSequence Shape Size Slice Split Squeeze Tile Transpose '
     'Trilu Unsqueeze Where'),
    (('FP32', 'FP16', ),
     'DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign'),
    (('BOOL', ),
     'And Not Or Xor'),
    (('FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'UINT8', 'BOOL', ),
     'Cast CastLike'),
    (('INT8', 'FP8', 'INT4', ),
     'DequantizeLinear'),
    (('FP32', 'FP16', 'BF16', 'INT8', 'INT32', 'INT64', ),
     'Gelu'),
    (('FP32', 'FP16', 'BF16', 'FP8', 'INT32', 'INT64', ),
     'Mean'),
)
SUPPORTED_TYPES = {op: frozenset(types) for types, ops in _TYPE_GROUPS
                   for op in ops.split()}
# Inputs that must be initializers or constants, by op and input index.
CONSTANT_INPUTS = {
    'Slice': (3, ), 'Squeeze': (1, ), 'Unsqueeze': (1, ), 'Pad': (3, ),
    'CumSum': (1, ), **{f'Reduce{kind}': (1, ) for kind in (
        'L1', 'L2', 'LogSum', 'LogSumExp', 'Max', 'Mean', 'Min', 'Prod',
        'Sum', 'SumSquare')},
}

_ONNX_TYPE_NAMES = {'FLOAT': 'FP32', 'FLOAT16': 'FP16', 'BFLOAT16': 'BF16',
                    'DOUBLE': 'FP64'}


def _constants(graph) -> Dict[str, np.ndarray]:
    """Values of the graph's initializers and Constant nodes, by name."""
    from onnx import numpy_helper
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == 'Constant':
            for attr in node.attribute:
                if attr.name == 'value':
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
                elif attr.name in ('value_int', 'value_ints'):
                    values[node.output[0]] = np.array(
                        attr.i if attr.name == 'value_int' else attr.ints)
    return values


def _upper_bound(name: str, producers, constants) -> Optional[float]:
    """A constant upper bound of an integer tensor: its value, or through
    Min (of any bounded input), Reshape, Cast, Squeeze, Unsqueeze and
    Identity; None if none is found."""
    if name in constants:
        return float(np.max(constants[name]))
    node = producers.get(name)
    if node is None:
        return None
    if node.op_type == 'Min':
        bounds = [_upper_bound(i, producers, constants) for i in node.input]
        bounds = [b for b in bounds if b is not None]
        return min(bounds) if bounds else None
    if node.op_type in ('Reshape', 'Cast', 'Squeeze', 'Unsqueeze',
                        'Identity'):
        return _upper_bound(node.input[0], producers, constants)
    return None


def tensorrt_problems(model) -> List[str]:
    """What in an ONNX model TensorRT's ONNX parser (per :data:`SOURCE`)
    would refuse: ops outside :data:`SUPPORTED_OPS`, data types outside
    :data:`SUPPORTED_TYPES`, a TopK whose K is not a constant below
    :data:`TOPK_LIMIT` or that is unsorted, a LayerNormalization whose
    mean/variance outputs are used, a ScatterND with a reduction,
    non-constant axes (:data:`CONSTANT_INPUTS`), an opset above
    :data:`MAX_OPSET`.

    Args:
        model: An ``onnx.ModelProto`` (with ``value_info``, as the dynamo
            exporter writes it, for the type check).

    Returns:
        One line per problem; empty if none is found.
    """
    from onnx import TensorProto
    graph = model.graph
    problems = [f'opset {o.version} > {MAX_OPSET}' for o in model.opset_import
                if o.domain in ('', 'ai.onnx') and o.version > MAX_OPSET]
    constants = _constants(graph)
    producers = {out: node for node in graph.node for out in node.output}
    types = {v.name: v.type.tensor_type.elem_type for v in (
        *graph.value_info, *graph.input, *graph.output)}
    types.update({i.name: i.data_type for i in graph.initializer})
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    for node in graph.node:
        op, where = node.op_type, f'{node.op_type} {node.name!r}'
        if node.domain not in ('', 'ai.onnx') or op not in SUPPORTED_OPS:
            problems.append(f'{where}: not in the supported ops')
            continue
        data = node.input[1 if op == 'Where' else 0] if node.input else (
            node.output[0])
        if op == 'ConstantOfShape':
            data = node.output[0]
        if data in types and types[data]:
            name = TensorProto.DataType.Name(types[data])
            name = _ONNX_TYPE_NAMES.get(name, name)
            if name not in SUPPORTED_TYPES[op]:
                problems.append(f'{where}: type {name} not supported')
        attrs = {a.name: a for a in node.attribute}
        if op == 'TopK':
            bound = _upper_bound(node.input[1], producers, constants)
            if bound is None or bound >= TOPK_LIMIT:
                problems.append(f'{where}: K bound {bound} is not a '
                                f'constant < {TOPK_LIMIT}')
            if 'sorted' in attrs and attrs['sorted'].i != 1:
                problems.append(f'{where}: sorted=0')
        if op == 'LayerNormalization' and any(
                out in used for out in node.output[1:]):
            problems.append(f'{where}: its mean/variance outputs are used')
        if op == 'ScatterND' and attrs.get('reduction') is not None and (
                attrs['reduction'].s not in (b'', b'none')):
            problems.append(f'{where}: reduction is not supported')
        for index in CONSTANT_INPUTS.get(op, ()):
            if len(node.input) > index and node.input[index] and (
                    node.input[index] not in constants):
                problems.append(f'{where}: input {index} (axes) is not '
                                'constant')
    return problems
