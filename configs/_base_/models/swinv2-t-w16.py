# SwinV2-T backbone for dense prediction, shared by the SwinV2 configs.
#
# Published setting followed: the official SwinV2 checkpoint
# swinv2_tiny_patch4_window16_256 (ImageNet-1K, 256 px, window 16; its
# stage 4 is 8x8 tokens, so the official code ran that stage at window 8).
# Our choices (no published SwinV2 COCO/ADE20K recipe exists):
# - window 16 in every stage at the dense resolution, with
#   pretrained_window_sizes (16, 16, 16, 8), the windows the checkpoint was
#   trained with, so the continuous position bias sees the coordinate range
#   it learned and extrapolates log-spaced beyond it (SwinV2 paper, sec. 3.3);
# - the V1 recipes otherwise (optimizer, schedule, pipelines, drop_path);
# - no weight decay on logit_scale and cpb_mlp in addition to the V1 keys:
#   the official SwinV2 code's no_weight_decay_keywords.
swinv2_backbone = dict(
    _delete_=True,
    type='mmswin.SwinTransformerV2',
    arch='tiny',
    window_size=16,
    pretrained_window_sizes=(16, 16, 16, 8),
    out_indices=(0, 1, 2, 3),
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://github.com/SwinTransformer/storage/releases/'
        'download/v2.0.0/swinv2_tiny_patch4_window16_256.pth'))
swinv2_no_decay = {
    'logit_scale': dict(decay_mult=0.),
    'cpb_mlp': dict(decay_mult=0.),
}
