"""tools/train.py, tools/test.py and tools/dist_*.sh on the toy COCO
detectors: a few real iterations each, then COCO metrics from the saved
checkpoint. Runs as subprocesses, the way users run the tools.
"""
import os.path as osp
import pickle
import re
import sys

import pytest
from helpers import (
    TOOL_ENV,
    coco_data_options,
    free_port,
    load_tool,
    run_tool,
    run_tool_ok,
)
from helpers import TOY_DET_CONFIG as MASK_RCNN

CASCADE = 'configs/toy/cascade-mask-rcnn_swin-toy_fpn_giou-4conv1f_toy-coco.py'


@pytest.fixture(scope='module')
def toy_root(make_toy_coco) -> str:
    """6 training images (3 iterations of 2) and 2 val images."""
    return make_toy_coco(seed=3, num_train=6, num_val=2)


def train_then_test(config, root, work_dir, validate):
    options = coco_data_options(root) + [
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.persistent_workers=False',
        'test_dataloader.persistent_workers=False',
        'train_cfg.max_epochs=1', 'default_hooks.checkpoint.interval=1',
        'default_hooks.logger.interval=1',
        f'train_cfg.val_begin={1 if validate else 2}']
    log = run_tool_ok([sys.executable, 'tools/train.py', config,
                       '--work-dir', work_dir, '--cfg-options', *options],
                      timeout=300)
    iterations = re.findall(r'Epoch\(train\) \[1\]\[(\d+)/(\d+)\]', log)
    assert iterations[-1] == ('3', '3'), iterations
    losses = [float(x) for x in re.findall(r'  loss: ([\d.]+)', log)]
    assert len(losses) == 3 and all(0 < x < 100 for x in losses), losses
    assert ('coco/bbox_mAP' in log) == validate
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(checkpoint)

    results = osp.join(work_dir, 'results.pkl')
    log = run_tool_ok([sys.executable, 'tools/test.py', config, checkpoint,
                       '--work-dir', work_dir, '--out', results,
                       '--cfg-options', *options], timeout=300)
    metrics = dict(re.findall(r'(coco/(?:bbox|segm)_mAP): (-?[\d.]+)', log))
    assert set(metrics) == {'coco/bbox_mAP', 'coco/segm_mAP'}, log[-2000:]
    for value in metrics.values():
        assert 0 <= float(value) <= 1
    with open(results, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 2  # one per val image
    instances = predictions[0]['pred_instances']
    assert instances['bboxes'].shape[1] == 4
    assert len(instances['masks']) == len(instances['bboxes'])


def test_train_and_test_toy_mask_rcnn(toy_root, tmp_path):
    train_then_test(MASK_RCNN, toy_root, str(tmp_path), validate=True)


def test_train_and_test_toy_cascade(toy_root, tmp_path):
    train_then_test(CASCADE, toy_root, str(tmp_path), validate=False)


def test_dist_train_two_processes_on_gloo(toy_root, tmp_path):
    """torchrun with 2 CPU processes: each sees 3 of the 6 images, so one
    epoch of batch 2 is 2 iterations, and gradients are all-reduced. The
    toy Cascade with the paper's SyncBN in its three box heads: without
    CUDA, tools/train.py sets them to BN with a notice (torch's SyncBN
    cannot train on CPU) and training succeeds."""
    options = coco_data_options(toy_root) + [
        'env_cfg.dist_cfg.backend=gloo', 'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'train_cfg.max_epochs=1', 'train_cfg.val_begin=2',
        'default_hooks.logger.interval=1']
    sync_bn = [f'model.roi_head.bbox_head.{i}.norm_cfg.type=SyncBN'
               for i in range(3)]
    env = dict(TOOL_ENV, PORT=str(free_port()))
    log = run_tool_ok(
        ['bash', 'tools/dist_train.sh', CASCADE, '2', '--work-dir',
         str(tmp_path), '--cfg-options', *options, *sync_bn], timeout=300,
        env=env)
    assert log.count('3 SyncBN layer configs set to BN: SyncBN needs CUDA '
                     'in multi-process training') == 1  # rank 0 only
    assert 'Distributed training: True' in log
    assert re.search(r'GPU number: 2|world_size: 2', log), log[-3000:]
    assert re.findall(r'Epoch\(train\) \[1\]\[(\d+)/(\d+)\]',
                      log)[-1] == ('2', '2')
    assert osp.isfile(tmp_path / 'epoch_1.pth')

    # tools/dist_test.sh on the same 2 processes evaluates that checkpoint.
    log = run_tool_ok(
        ['bash', 'tools/dist_test.sh', CASCADE,
         str(tmp_path / 'epoch_1.pth'), '2', '--work-dir',
         str(tmp_path / 'test'), '--cfg-options', *options], timeout=300,
        env=env)
    assert re.search(r'coco/bbox_mAP: [\d.]+', log), log[-3000:]


# -- clear errors instead of tracebacks ---------------------------------------
def test_missing_config_is_one_line(capsys):
    train = load_tool('tools/train.py')
    with pytest.raises(SystemExit) as error:
        train.main(['configs/no-such-config.py'])
    assert error.value.code == 2
    assert capsys.readouterr().err == (
        'error: config file not found: configs/no-such-config.py\n')


def test_missing_checkpoint_is_one_line(capsys):
    test_tool = load_tool('tools/test.py')
    with pytest.raises(SystemExit) as error:
        test_tool.main([MASK_RCNN, 'work_dirs/none/epoch_9.pth'])
    assert error.value.code == 2
    assert capsys.readouterr().err == (
        'error: checkpoint not found: work_dirs/none/epoch_9.pth\n')


def test_missing_dataset_is_one_line_from_the_cli(tmp_path):
    missing = str(tmp_path / 'nowhere')
    code, log = run_tool([sys.executable, 'tools/train.py', MASK_RCNN,
                          '--work-dir', str(tmp_path), '--cfg-options',
                          f'train_dataloader.dataset.data_root={missing}/'])
    assert code == 2
    assert 'Traceback' not in log
    assert log.strip().splitlines()[-1] == (
        f'error: dataset folder not found: {missing}/ (from '
        'train_dataloader); generate or download the dataset, or point '
        '--cfg-options train_dataloader.dataset.data_root=... at it')


def test_missing_annotation_file_is_named(capsys, toy_root):
    train = load_tool('tools/train.py')
    with pytest.raises(SystemExit):
        train.main([MASK_RCNN, '--cfg-options',
                    f'train_dataloader.dataset.data_root={toy_root}/',
                    'train_dataloader.dataset.ann_file=annotations/x.json'])
    assert capsys.readouterr().err.startswith(
        f'error: dataset file not found: {toy_root}/annotations/x.json')


def test_resume_checkpoint_must_exist(capsys):
    train = load_tool('tools/train.py')
    with pytest.raises(SystemExit):
        train.main([MASK_RCNN, '--resume', 'nope/latest.pth'])
    assert capsys.readouterr().err == (
        'error: checkpoint not found: nope/latest.pth\n')
