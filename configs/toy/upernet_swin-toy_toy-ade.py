# A CPU-sized UperNet + Swin on the toy ADE20K-format shapes (made by
# tools/misc/make_toy_data.py --kind ade): `make demo-seg` trains it in
# minutes. It is the Swin-T paper config shrunk: a 4-stage Swin with 32
# channels trained from scratch, 64/32-channel heads, 128-pixel images,
# plain BN instead of SyncBN, and a short schedule with a larger lr. The
# pipelines are the paper's with the sizes scaled from 512 to 128.
_base_ = '../upernet_swin-t-p4-w7_8xb2-160k_ade20k-512x512.py'

data_root = 'data/toy/ade'
# Must match tools/misc/toy_ade.py (CLASSES, PALETTE); a test checks it.
metainfo = dict(
    classes=('background', 'square', 'disc', 'triangle'),
    palette=[(40, 40, 40), (230, 60, 60), (60, 200, 60), (70, 110, 240)])
crop_size = (128, 128)
test_scale = (512, 128)  # the paper's (2048, 512) shape at this size

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        embed_dims=32,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        drop_path_rate=0.1,
        init_cfg=None),
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=32,
                     num_classes=len(metainfo['classes']),
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=128, channels=16,
                        num_classes=len(metainfo['classes']),
                        norm_cfg=norm_cfg))

_sizes = dict(RandomResize=dict(scale=test_scale),
              RandomCrop=dict(crop_size=crop_size),
              Resize=dict(scale=test_scale))
train_pipeline = [
    dict(t, **_sizes.get(t['type'], {})) for t in _base_.train_pipeline]
test_pipeline = [
    dict(t, **_sizes.get(t['type'], {})) for t in _base_.test_pipeline]
tta_pipeline = _base_.tta_pipeline
tta_pipeline[1]['transforms'][0] = [
    dict(type='Resize', keep_ratio=True,
         scale=(int(test_scale[0] * r), int(test_scale[1] * r)))
    for r in _base_.img_ratios]
del _sizes

dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(dataset, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 400
warmup_iters = 50
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(_base_.param_scheduler[0], end=warmup_iters + 1),
    dict(_base_.param_scheduler[1], end=max_iters + 1),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
auto_scale_lr = dict(base_batch_size=8)

default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(type='mmswin.ResumableCheckpointHook',
                    interval=max_iters, max_keep_ckpts=1),
    # with --show-dir, draw every batch (mmseg's default: every 50th)
    visualization=dict(interval=1))
log_processor = dict(window_size=50)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
# tools/test.py --show-dir: ground truth | prediction, each drawn over the
# input at half opacity.
visualizer = dict(alpha=0.5)
