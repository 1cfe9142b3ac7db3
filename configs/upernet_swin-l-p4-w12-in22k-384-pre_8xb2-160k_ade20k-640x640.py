# UperNet + Swin-L (ImageNet-22K pretraining, window 12) on ADE20K,
# 640x640 crops, 160k iterations. Published (microsoft/Swin-Transformer
# README, "ADE20K Semantic Segmentation (val)"; Swin paper, arXiv
# 2103.14030, Table 3): 52.05 mIoU single-scale, 53.53 multi-scale + flip,
# 234M params, 3230G FLOPs. Width 192, heads (6, 12, 24, 48) and the
# checkpoint (swin_large_patch4_window12_384_22k.pth) differ from the
# Swin-B 640 config; see its header for where the 640 settings come from.
_base_ = './upernet_swin-b-p4-w12-in22k-384-pre_8xb2-160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        embed_dims=192,
        num_heads=[6, 12, 24, 48],
        init_cfg=dict(
            checkpoint='https://github.com/SwinTransformer/storage/releases/'
            'download/v1.0.0/swin_large_patch4_window12_384_22k.pth')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))
