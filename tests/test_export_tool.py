"""tools/deployment/export_onnx.py end to end on small configs: an mmseg
UperNet with a Swin V2 backbone (dynamic shapes, --verify with ONNX Runtime
and OpenVINO), an mmdet config's Swin + FPN and the full toy Faster R-CNN
(fixed shapes), plus its clear failures."""
import re
import sys

import pytest
from helpers import TOY_DET_CONFIG, TOY_SEG_CONFIG, run_tool, run_tool_ok

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

TOOL = 'tools/deployment/export_onnx.py'
# The toy UperNet on a two-stage Swin V2 of 16 channels (export time grows
# about 4x per stage; tests/test_export_models.py says why).
V2_BACKBONE = [
    'model.backbone._delete_=True',
    'model.backbone.type=mmswin.SwinTransformerV2',
    'model.backbone.embed_dims=16', 'model.backbone.depths=(1,2)',
    'model.backbone.num_heads=(1,2)', 'model.backbone.window_size=4',
    'model.backbone.out_indices=(0,1)', 'model.backbone.init_cfg=None',
    'model.decode_head.in_channels=[16,32]',
    'model.decode_head.in_index=[0,1]',
    'model.auxiliary_head.in_channels=32', 'model.auxiliary_head.in_index=1']
ROW = re.compile(r'^\s+(\d+)x3x(\d+)x(\d+)\s+(onnxruntime|openvino)\s+(.*)$',
                 re.M)
CELL = re.compile(r'(\w+) (\S+) \[')


def parity_rows(log: str):
    """``(batch, height, width, runtime, {output: diff})`` per table row."""
    return [(int(b), int(h), int(w), runtime,
             {name: float(diff) for name, diff in CELL.findall(cells)})
            for b, h, w, runtime, cells in ROW.findall(log)]


def test_tool_exports_and_verifies_a_dynamic_segmentor(tmp_path):
    out = tmp_path / 'upernet_v2.onnx'
    log = run_tool_ok([sys.executable, TOOL, TOY_SEG_CONFIG, '--out', str(out),
                       '--shape', '96', '128', '--dynamic', '--verify', '2',
                       '--atol', '1e-4', '--cfg-options', *V2_BACKBONE])
    assert out.is_file()
    assert 'exported segmentation (full)' in log
    rows = parity_rows(log)
    runtimes = {row[3] for row in rows}
    assert 'onnxruntime' in runtimes
    assert len(rows) == 2 * len(runtimes)
    shapes = {row[:3] for row in rows}
    assert len(shapes) == 2 and (1, 96, 128) not in shapes
    for *_, diffs in rows:
        assert set(diffs) == {'logits'} and diffs['logits'] <= 1e-4
    assert re.search(r'^\s+pytorch\s+[\d.]+ ms', log, re.M)
    assert re.search(r'^\s+onnxruntime\s+[\d.]+ ms', log, re.M)
    assert re.search(r'^verify: ok$', log, re.M)


def test_tool_exports_detector_features_at_a_fixed_size(tmp_path):
    out = tmp_path / 'swin_fpn.onnx'
    log = run_tool_ok([sys.executable, TOOL, TOY_DET_CONFIG, '--out', str(out),
                       '--shape', '96', '96', '--part', 'features',
                       '--verify', '1'])
    assert 'exported features (features)' in log
    rows = parity_rows(log)
    assert rows and all(row[:3] == (1, 96, 96) for row in rows)
    for *_, diffs in rows:
        assert sorted(diffs) == [f'features_{i}' for i in range(5)]
        assert max(diffs.values()) <= 1e-3
    assert re.search(r'^verify: ok$', log, re.M)


def test_tool_exports_a_full_faster_rcnn(faster_rcnn_tool_export):
    """The box-only detector exports full (issue 24 item 7) and ONNX Runtime
    (and OpenVINO) give the wrapper's detections on images packed in the
    graph's batch; that the wrapper gives mmdet's is
    tests/test_export_batched.py's check."""
    log, path = faster_rcnn_tool_export
    assert 'exported detection (full)' in log
    assert 'outputs num_dets, boxes, scores, labels, input images' in log
    rows = parity_rows(log)
    assert rows and all(row[:3] == (1, 128, 160) for row in rows)
    for *_, diffs in rows:
        assert sorted(diffs) == ['boxes', 'labels', 'num_dets', 'scores']
        assert diffs['num_dets'] == diffs['labels'] == 0
        assert max(diffs.values()) <= 1e-3
    assert re.search(r'^verify: ok$', log, re.M)


def test_tool_names_the_fix_for_what_cannot_export(tmp_path):
    code, log = run_tool([sys.executable, TOOL, TOY_DET_CONFIG, '--out',
                          str(tmp_path / 'x.onnx'), '--shape', '64', '64',
                          '--dynamic'])
    assert code == 2 and 'sides >= 65' in log
    code, log = run_tool([sys.executable, TOOL, TOY_DET_CONFIG, '--out',
                          str(tmp_path / 'x.onnx'), '--cfg-options',
                          'model.backbone.check_finite=True'])
    assert code == 2 and 'check_finite=False' in log
    code, log = run_tool([sys.executable, TOOL, 'configs/nope.py', '--out',
                          str(tmp_path / 'x.onnx')])
    assert code == 2 and 'config file not found' in log
