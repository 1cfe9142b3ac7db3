"""What an exported model file says about itself: the task, the class count
and the smallest and largest image side it accepts, stored as ONNX
``metadata_props`` (keys ``mmswin.*``), and the graph's output names and
static output sizes.

:func:`model_metadata` builds the entries from a built model,
:func:`write_metadata` adds them to an ``.onnx`` file (the exporter calls
it), :func:`read_model_file` reads them back, from an ``.onnx`` file or an
OpenVINO ``.xml`` converted from one (OpenVINO keeps ONNX metadata in the
model's ``rt_info``).
"""
import os.path as osp
from typing import Dict, List, NamedTuple, Optional

PREFIX = 'mmswin.'
INT_KEYS = ('num_classes', 'min_side', 'max_side')


class ModelFileInfo(NamedTuple):
    """An exported graph's interface.

    Attributes:
        input_names, output_names: The graph's names.
        output_dims: Per output, its static sizes (None where dynamic).
        metadata: The ``mmswin.*`` entries without the prefix (``task``
            str; ``num_classes``, ``min_side``, ``max_side`` int); empty for
            a file exported without them.
    """
    input_names: List[str]
    output_names: List[str]
    output_dims: Dict[str, List[Optional[int]]]
    metadata: Dict[str, object]


def model_metadata(model, task: str, min_side: int,
                   max_side: int) -> Dict[str, str]:
    """The entries for an export of ``model`` (an mmdet detector or mmseg
    segmentor): ``task`` (``'detection'``/``'segmentation'``), the class
    count of its heads and the sides the export accepts."""
    import torch.nn as nn
    head = (model.decode_head if task == 'segmentation' else
            model.roi_head.bbox_head)
    # a cascade's heads are a ModuleList; the last one predicts
    num_classes = (head[-1] if isinstance(head, nn.ModuleList) else
                   head).num_classes
    return dict(task=task, num_classes=str(int(num_classes)),
                min_side=str(int(min_side)), max_side=str(int(max_side)))


def write_metadata(onnx_file: str, entries: Dict[str, str]) -> None:
    """Add (or replace) ``mmswin.<key>`` metadata entries in ``onnx_file``."""
    import onnx
    # weights stored beside the file (model.onnx.data) stay there
    proto = onnx.load(onnx_file, load_external_data=False)
    keep = [p for p in proto.metadata_props
            if p.key[len(PREFIX):] not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in entries.items():
        proto.metadata_props.add(key=PREFIX + key, value=str(value))
    onnx.save(proto, onnx_file)


def _parse(raw: Dict[str, str]) -> Dict[str, object]:
    entries: Dict[str, object] = {}
    for key, value in raw.items():
        if key.startswith(PREFIX):
            name = key[len(PREFIX):]
            entries[name] = int(value) if name in INT_KEYS else value
    return entries


def read_model_file(model_file: str) -> ModelFileInfo:
    """The interface of an ``.onnx`` file or OpenVINO ``.xml``."""
    if not osp.isfile(model_file):
        raise FileNotFoundError(f'model file not found: {model_file}')
    if model_file.endswith('.xml'):
        from .runtime import import_openvino
        ov = import_openvino()
        model = ov.Core().read_model(model_file)
        outputs = {port.get_any_name(): [
            d.get_length() if d.is_static else None
            for d in port.get_partial_shape()] for port in model.outputs}
        raw = {}
        for key in ('num_classes', 'min_side', 'max_side', 'task'):
            for path in (['framework', PREFIX + key], [PREFIX + key]):
                if model.has_rt_info(path):
                    raw[PREFIX + key] = model.get_rt_info(path).astype(str)
                    break
        return ModelFileInfo([p.get_any_name() for p in model.inputs],
                             list(outputs), outputs, _parse(raw))
    import onnx
    proto = onnx.load(model_file, load_external_data=False)
    outputs = {o.name: [d.dim_value if d.HasField('dim_value') else None
                        for d in o.type.tensor_type.shape.dim]
               for o in proto.graph.output}
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    return ModelFileInfo(inputs, list(outputs), outputs,
                         _parse({p.key: p.value
                                 for p in proto.metadata_props}))
