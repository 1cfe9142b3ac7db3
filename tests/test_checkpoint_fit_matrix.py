"""The bad-input matrix: every tool that loads a whole model, crossed with
damaged files and with checkpoints of the wrong model (issue 23).

Rows (inputs): a truncated file, an empty file, a directory, a JPEG named
``.pth``, a safetensors file with a bad header; a detector checkpoint for
the segmentor config and the reverse, the backbone alone, another class
count (80 COCO classes for the 3-class toy), a Swin V2 backbone for a V1
config; and the control, the right checkpoint. Columns (tools):
``tools/test.py``, ``demo/image_demo.py``, ``tools/deployment/
export_onnx.py``, ``tools/analysis_tools/get_flops.py --checkpoint`` and
``tools/train.py --resume``. Each refusal must exit with status 2 and one
``error:`` line naming the file and the problem (no traceback); the
control must work. The issue's four commands are the cells (det-for-seg,
test), (backbone-only, test), (det-for-seg, export), (det-for-seg, demo).

Checkpoints are random weights of the toy configs, written in mmengine's
format ``{'meta': ..., 'state_dict': ...}``. The tools run in-process, and
two mmengine costs that would dominate the matrix's time are cut: configs
are parsed once per file (each ``mmdet::`` base makes ``Config.fromfile``
re-read mmdet's model-index YAML files, ~1 s a call) and the Runner's
config dumps are not run through yapf (~1 s a Runner).
"""
import copy
import os
import os.path as osp
import re
import uuid
from typing import Dict, List

import pytest
import torch
from helpers import (
    ROOT,
    TOY_DET_CONFIG,
    TOY_SEG_CONFIG,
    ade_data_options,
    coco_data_options,
    load_tool,
)
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

DET, SEG = TOY_DET_CONFIG, TOY_SEG_CONFIG
CLASSES = ('square', 'disc', 'triangle')
V2_BACKBONE = dict(_delete_=True, type='mmswin.SwinTransformerV2',
                   embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                   window_size=7, out_indices=(0, 1, 2, 3))


@pytest.fixture(scope='module', autouse=True)
def _fast_configs():
    parsed = {}
    fromfile = Config.fromfile

    def cached(path, *args, **kwargs):
        key = (osp.abspath(path), args, tuple(sorted(kwargs.items())))
        if key not in parsed:
            parsed[key] = fromfile(path, *args, **kwargs)
        return copy.deepcopy(parsed[key])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Config, 'fromfile', staticmethod(cached))
        patch.setattr('mmengine.config.config.FormatCode',
                      lambda text, **kwargs: (text, False))
        yield


def log_here() -> None:
    """mmengine's 'current' logger writes to the stdout it was made with:
    make one under this test's capture (pytest closes each phase's)."""
    MMLogger.get_instance(f'fit-matrix-{uuid.uuid4().hex}')


def build(config: str, **options) -> torch.nn.Module:
    """The config's model with random weights."""
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.merge_from_dict(options)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        if cfg.default_scope == 'mmdet':
            from mmdet.registry import MODELS
        else:
            from mmseg.registry import MODELS
        return MODELS.build(cfg.model)


def save(state: dict, path: str) -> str:
    meta = dict(dataset_meta=dict(classes=CLASSES), epoch=1, iter=1)
    torch.save({'meta': meta, 'state_dict': state}, path)
    return path


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> Dict[str, str]:
    """Every row's checkpoint (or bad file) by name."""
    folder = tmp_path_factory.mktemp('checkpoints')
    path = lambda name: str(folder / name)  # noqa: E731
    det = build(DET).state_dict()
    out = dict(
        det=save(det, path('det.pth')),
        seg=save(build(SEG).state_dict(), path('seg.pth')),
        backbone=save({k: v for k, v in det.items()
                       if k.startswith('backbone.')}, path('backbone.pth')),
        classes=save(build(DET, **{
            'model.roi_head.bbox_head.num_classes': 80,
            'model.roi_head.mask_head.num_classes': 80}).state_dict(),
            path('coco80.pth')),
        v2=save(build(DET, **{'model.backbone': V2_BACKBONE}).state_dict(),
                path('swinv2.pth')))
    with open(out['det'], 'rb') as f:
        data = f.read()
    with open(path('truncated.pth'), 'wb') as f:
        f.write(data[:min(100_000, len(data) // 2)])
    open(path('empty.pth'), 'wb').close()
    os.mkdir(path('folder.pth'))
    import mmcv
    import numpy as np
    mmcv.imwrite(np.zeros((8, 8, 3), np.uint8), path('photo.jpg'))
    os.rename(path('photo.jpg'), path('photo.pth'))
    with open(path('bad.safetensors'), 'wb') as f:  # header: 40 bytes
        f.write((40).to_bytes(8, 'little') + b'{"w": {"dtype": "F32", "sha' +
                bytes(13))
    out.update(truncated=path('truncated.pth'), empty=path('empty.pth'),
               directory=path('folder.pth'), jpeg=path('photo.pth'),
               safetensors=path('bad.safetensors'))
    return out


@pytest.fixture(scope='module')
def data(make_toy_coco, make_toy_ade) -> Dict[str, List[str]]:
    """--cfg-options pointing each toy config at one-image toy data."""
    coco = make_toy_coco(seed=3, size=64, num_train=1, num_val=1)
    ade = make_toy_ade(seed=0, size=64, num_train=1, num_val=1)
    loaders = [f'{loader}.{option}' for loader in (
        'train_dataloader', 'test_dataloader') for option in (
        'num_workers=0', 'persistent_workers=False',
        'dataset.serialize_data=False')]  # its gc.collect() takes ~1 s
    return {DET: coco_data_options(coco) + loaders,
            SEG: ade_data_options(ade) + loaders,
            'image': [osp.join(coco, 'val', sorted(os.listdir(
                osp.join(coco, 'val')))[0])]}


def argv(tool: str, config: str, checkpoint: str, data, tmp) -> List[str]:
    """The command line of ``tool`` for ``config`` and ``checkpoint``.
    Each Runner gets its own experiment (and so logger) name: mmengine's
    default, config name and time to the second, would hand a Runner made
    within the same second the logger of an earlier test."""
    options = ['--cfg-options', *data[config],
               f'experiment_name=fit-{uuid.uuid4().hex}']
    return {
        'test': [config, checkpoint, '--work-dir', str(tmp / 'w'),
                 *options],
        'demo': [config, checkpoint, data['image'][0], '--out-file',
                 str(tmp / 'drawn.png')],
        'export': [config, checkpoint, '--out', str(tmp / 'm.onnx'),
                   '--shape', '64', '64'],
        'flops': [config, '--checkpoint', checkpoint, '--shape', '64'],
        'resume': [config, '--work-dir', str(tmp / 't'), '--resume',
                   checkpoint, *options],
    }[tool]


SCRIPTS = {'test': 'tools/test.py', 'demo': 'demo/image_demo.py',
           'export': 'tools/deployment/export_onnx.py',
           'flops': 'tools/analysis_tools/get_flops.py',
           'resume': 'tools/train.py'}
TOOLS = list(SCRIPTS)


def refusal(capsys, tool: str, args: List[str]) -> str:
    """Run ``tool`` in-process; it must exit 2 with one ``error:`` line,
    which is returned."""
    log_here()
    with pytest.raises(SystemExit) as exit_:
        load_tool(SCRIPTS[tool]).main(args)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, err[-2000:]
    assert 'mmswin: loaded weights' not in out  # conversions: on loads only
    assert 'Traceback' not in err
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err[-2000:]
    return lines[0]


# -- damaged files ------------------------------------------------------------
DAMAGED = {
    'truncated': 'the file is truncated or corrupt (broken zip archive',
    'empty': 'the file is empty',
    'directory': 'it is a directory, not a checkpoint file',
    'jpeg': 'it is a JPEG image, not a checkpoint (the file is truncated or '
            'not a checkpoint)',
    'safetensors': 'the file is truncated or corrupt (safetensors:',
}


@pytest.mark.parametrize('tool', TOOLS)
@pytest.mark.parametrize('row', sorted(DAMAGED))
def test_damaged_file_is_one_line(files, data, tmp_path, capsys, tool, row):
    line = refusal(capsys, tool, argv(tool, DET, files[row], data, tmp_path))
    assert line.startswith(f'error: Cannot read checkpoint {files[row]!r}: ')
    assert DAMAGED[row] in line


@pytest.mark.parametrize('row', sorted(DAMAGED))
def test_damaged_file_raises_the_named_exception(files, row):
    """The loader's Python API: CorruptCheckpointError, same message."""
    from mmswin.checkpoint import CorruptCheckpointError, read_checkpoint
    with pytest.raises(CorruptCheckpointError) as error:
        read_checkpoint(files[row])
    assert DAMAGED[row] in str(error.value)
    assert files[row] in str(error.value)


# -- checkpoints of another model ---------------------------------------------
DETECTOR = 'a detector (backbone, neck, rpn_head, roi_head)'
BUILDS_DETECTOR = 'the config builds a detector (backbone, neck, rpn_head, ' \
    'roi_head)'
WRONG = {  # row: (config, file, what the message must say)
    'det-for-seg': (SEG, 'det', [
        f'holds {DETECTOR}; the config builds a segmentor (backbone, '
        'decode_head, auxiliary_head): decode_head, auxiliary_head missing; '
        'neck, rpn_head, roi_head not used (38 tensors)']),
    'seg-for-det': (DET, 'seg', [
        'holds a segmentor (backbone, decode_head, auxiliary_head); '
        f'{BUILDS_DETECTOR}: neck, rpn_head, roi_head missing; decode_head, '
        'auxiliary_head not used']),
    'backbone-only': (DET, 'backbone', [
        f'holds a backbone only (backbone); {BUILDS_DETECTOR}: neck, '
        'rpn_head, roi_head missing']),
    'classes': (DET, 'classes', [
        'roi_head.bbox_head.fc_cls: checkpoint has 81 classes, config 4']),
    'v2-for-v1': (DET, 'v2', [
        'backbone: checkpoint holds a Swin V2 backbone, the config builds '
        'Swin V1']),
}
VERBS = {'test': 'evaluate', 'demo': 'draw', 'export': 'export',
         'flops': 'count'}


@pytest.mark.parametrize('tool', TOOLS)
@pytest.mark.parametrize('row', sorted(WRONG))
def test_wrong_model_is_refused(files, data, tmp_path, capsys, tool, row):
    config, name, expected = WRONG[row]
    line = refusal(capsys, tool, argv(tool, config, files[name], data,
                                      tmp_path))
    assert line.startswith(f'error: checkpoint {files[name]} holds a ')
    for text in expected:
        assert text in line
    if tool == 'resume':
        assert line.endswith('(--resume continues the model of this config; '
                             'to start from these weights, use --cfg-options '
                             'load_from=FILE)')
    else:
        assert line.endswith(f'(pass --allow-partial to {VERBS[tool]} '
                             'anyway)')


# -- the control: the right checkpoint works ----------------------------------
@pytest.mark.parametrize('tool', ['test', 'demo', 'flops'])
def test_right_checkpoint_works(files, data, tmp_path, capsys, tool):
    log_here()
    result = load_tool(SCRIPTS[tool]).main(argv(tool, DET, files['det'],
                                                data, tmp_path))
    out = capsys.readouterr()
    assert 'error:' not in out.err
    if tool == 'test':
        assert set(result) >= {'coco/bbox_mAP', 'coco/segm_mAP'}
    elif tool == 'demo':
        assert osp.getsize(tmp_path / 'drawn.png') > 0
    else:
        assert result['flops'] > 0


def test_right_checkpoint_exports(files, data, tmp_path, capsys,
                                  monkeypatch):
    """The export tool loads the right checkpoint: every weight of the
    model it exports equals the file's. (ONNX export itself is
    tests/test_export_tool.py's; here it is stubbed, to save ~15 s.)"""
    from mmswin.deploy import export
    built = []

    def build_model(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    def export_onnx(wrapper, images, out, dynamic=False):
        open(out, 'wb').close()
        return ['logits']

    real_build = export.build_model
    monkeypatch.setattr(export, 'build_model', build_model)
    monkeypatch.setattr(export, 'export_onnx', export_onnx)
    log_here()
    code = load_tool(SCRIPTS['export']).main(argv(
        'export', SEG, files['seg'], data, tmp_path))
    assert code == 0
    assert 'error:' not in capsys.readouterr().err
    expected = torch.load(files['seg'])['state_dict']
    got = built[0].state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_allow_partial_evaluates_with_a_warning(files, data, tmp_path,
                                                capsys):
    log_here()
    metrics = load_tool('tools/test.py').main(
        argv('test', SEG, files['det'], data, tmp_path) + ['--allow-partial'])
    assert 'mIoU' in metrics
    out = capsys.readouterr()
    log = out.out + out.err
    assert re.search(r'mmswin: loading anyway, the results will not mean '
                     r'much: checkpoint \S+det.pth holds a detector', log)


# -- training: load_from loads what fits, --resume of the right file ----------
def test_fine_tuning_and_resume(files, data, tmp_path, capsys):
    """``load_from`` = the 80-class checkpoint into the 3-class config: one
    summary line, every tensor that fits loaded (lr 0 keeps them), the
    class layers left as initialised; then ``--resume`` of the checkpoint
    this run saved works (the resume column's control)."""
    options = data[DET] + [
        f'load_from={files["classes"]}', 'train_cfg.max_epochs=1',
        'train_cfg.val_begin=2', 'train_dataloader.batch_size=1',
        'optim_wrapper.optimizer.lr=0', 'default_hooks.logger.interval=1',
        f'experiment_name=fit-{uuid.uuid4().hex}']
    work = str(tmp_path / 'train')
    log_here()
    train = load_tool(SCRIPTS['resume'])
    model = train.main([DET, '--work-dir', work, '--cfg-options', *options])
    log = capsys.readouterr().out
    summaries = [line for line in log.splitlines()
                 if f'mmswin: {files["classes"]}: loaded' in line]
    assert len(summaries) == 1, log[-3000:]
    assert summaries[0].endswith(
        'loaded 118 of 124 model tensors (backbone, neck, rpn_head, '
        'roi_head); kept the initialisation of the rest: '
        'roi_head.bbox_head.fc_cls: checkpoint has 81 classes, config 4 '
        '(and 1 more class layers); 2 tensors of another shape (e.g. '
        'roi_head.bbox_head.fc_reg.weight: checkpoint (320, 128), config '
        '(12, 128))')
    assert 'do not match exactly' not in log  # mmengine's key list
    source = torch.load(files['classes'])['state_dict']
    state = model.state_dict()
    mismatched = [k for k in state if state[k].shape != source[k].shape]
    assert sorted(mismatched) == [
        f'roi_head.{head}.{layer}.{p}' for head, layer in (
            ('bbox_head', 'fc_cls'), ('bbox_head', 'fc_reg'),
            ('mask_head', 'conv_logits')) for p in ('bias', 'weight')]
    assert all(torch.equal(state[k], source[k]) for k in state
               if k not in mismatched)

    checkpoint = osp.join(work, 'epoch_1.pth')
    train.main([DET, '--work-dir', work, '--resume', checkpoint,
                '--cfg-options', *options])
    assert 'error:' not in capsys.readouterr().err


def test_classification_backbone_into_detector(files, tmp_path, capsys):
    """``load_from`` = an official classification file (``model``: bare
    backbone, final norm, head) into the detector: the backbone is moved
    under ``backbone.`` and loaded, the rest reported in one line (the
    hook, without a Runner around it)."""
    log_here()
    from mmswin.checkpoint import CheckpointFitHook
    det = torch.load(files['det'])['state_dict']
    state = {k[len('backbone.'):]: v for k, v in det.items()
             if k.startswith('backbone.')
             and not re.match(r'backbone\.norm\d', k)}
    state.update({'norm.weight': torch.ones(256), 'norm.bias':
                  torch.zeros(256), 'head.weight': torch.zeros(10, 256),
                  'head.bias': torch.zeros(10)})
    model = build(DET)
    runner = type('Runner', (), dict(model=model, work_dir=str(tmp_path)))
    checkpoint = {'model': state}
    CheckpointFitHook(mode='partial', source='cls.pth').after_load_checkpoint(
        runner, checkpoint)
    log = capsys.readouterr().out
    assert 'mmswin: cls.pth: loaded 78 of 124 model tensors (backbone); ' \
        'kept the initialisation of the rest: neck, rpn_head, roi_head ' \
        'missing; backbone: 8 of 86 tensors missing (e.g. ' \
        'backbone.norm0.weight); norm, head not used (4 tensors)' in log, \
        log
    loaded = checkpoint['state_dict']
    assert all(torch.equal(loaded['backbone.' + k], v)
               for k, v in state.items() if k in det)


def test_runner_tools_name_a_safetensors_file(files, data, tmp_path,
                                              capsys):
    """An intact .safetensors checkpoint: the demo loads it (mmswin reads
    safetensors); tools/test.py says how to make a .pth of it (mmengine's
    Runner reads PyTorch files only)."""
    from safetensors.torch import save_file
    path = str(tmp_path / 'det.safetensors')
    save_file(torch.load(files['det'])['state_dict'], path)
    line = refusal(capsys, 'test', argv('test', DET, path, data, tmp_path))
    assert line.startswith(f'error: {path} is a safetensors file, and '
                           "mmengine's Runner reads PyTorch checkpoints only")
    assert load_tool(SCRIPTS['flops']).main(argv(
        'flops', DET, path, data, tmp_path))['flops'] > 0
