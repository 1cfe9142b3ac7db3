# Swin-T backbone (patch 4, window 7, ImageNet-1K 224 pretraining) for the
# detection model bases, as in the official detection repo.
custom_imports = dict(imports=['mmswin'], allow_failed_imports=False)

swin_t_backbone = dict(
    _delete_=True,
    type='mmswin.SwinTransformer',
    arch='tiny',
    window_size=7,
    out_indices=(0, 1, 2, 3),
    init_cfg=dict(
        type='Pretrained',
        checkpoint='https://github.com/SwinTransformer/storage/releases/'
        'download/v1.0.0/swin_tiny_patch4_window7_224.pth'))
swin_t_channels = [96, 192, 384, 768]
