# Linear probing of the MAE-pre-trained VisionLLaMA-B on ImageNet-1k (paper: 69.7 top-1 after
# 800 MAE epochs, 71.7 after 1600): mmpretrain's MAE ViT-B linear-probe recipe -- frozen encoder,
# parameter-free BatchNorm neck, linear head, LARS lr 6.4, 8 GPUs x 2048 = 16384 images,
# 90 epochs (10 warm-up), AMP -- with the encoder swapped for VisionLLaMA.
#
# Feature: global average of the patch tokens (the authors' probe: out_type='avg_featmap',
# final_norm=False). Not the class token: in the released MAE weights the class token is
# appended after the last block (it never passes through the encoder), so it carries no
# image information.
# Weights: see vision-llama-b-p16_8xb128-coslr-100e_in1k.py.
_base_ = 'mmpretrain::mae/benchmarks/vit-base-p16_8xb2048-linear-coslr-90e_in1k.py'

custom_imports = dict(imports=['vllama_mm.mmpretrain'], allow_failed_imports=False)
# atomic checkpoints and a collective timeout in seconds (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
env_cfg = dict(dist_cfg=dict(timeout=1800))
# no `_scope_` key in the visualizer (mmpretrain's browse_dataset passes it on as kwargs)
visualizer = dict(_delete_=True, type='UniversalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')])

checkpoint = 'pretrain/vllama-b-mae-1600e.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionLLaMA',
        arch='mae-b',
        img_size=224,
        patch_size=16,
        with_cls_token=False,  # the checkpoint's cls_token is dropped on loading
        out_type='avg_featmap',  # mean of patch tokens, then ``ln2`` (frozen at identity init)
        final_norm=False,
        frozen_stages=12,  # patch embed, all 12 blocks and ``ln2``
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(type='ClsBatchNormNeck', input_features=768),
    head=dict(in_channels=768))

# lr 6.4 is for 8 x 2048 = 16384 images (the stock config inherits 1024 from its schedule base)
auto_scale_lr = dict(base_batch_size=16384)
