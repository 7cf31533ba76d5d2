# Mask R-CNN FPN with the Pyramid VisionLLaMA-S backbone, 3x (36 epochs) schedule with
# the DETR-style multi-scale + crop augmentation: the recipe of the authors' run
# (mask-rcnn_twins-b-p4-w7_fpn_ms-crop-3x_coco.py in their mmdet fork, trained with --amp),
# which equals mmdet's Swin 3x config used as the base here. Batch 16 = 8 GPUs x 2 images;
# AdamW lr 1e-4, wd 0.05 (none on norms); mixed precision. Differences: docs/fidelity.md.
#   bash tools/dist_train.sh configs/mmdet/mask_rcnn/mask-rcnn_pvllama-s_fpn_ms-crop-3x_coco.py 8
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'

custom_imports = dict(imports=['vllama_mm.mmdet'], allow_failed_imports=False)
# atomic checkpoints and a collective timeout in seconds (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
env_cfg = dict(dist_cfg=dict(timeout=1800))

# ImageNet-1k weights of PyramidVisionLLaMA-S in this plugin's layout (an mmpretrain
# checkpoint, hence prefix 'backbone.'): convert the released checkpoint with
#   python tools/model_converters/official2vllama.py <Pyramid-VisionLLaMA-S.pth> pretrain/pvllama-s_in1k.pth
pretrained = 'pretrain/pvllama-s_in1k.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='PyramidVisionLLaMA',
        arch='s',
        img_size=224,  # ImageNet pre-training size
        # per-stage LayerNorm in the main path (output and next stage's input); the four
        # norms are new layers (weight 1, bias 0) when loading the ImageNet weights
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        # The released weights were trained by the authors' code: reproduce its geometry
        # and its seg/det GSA position scale 14 / H_stage (every batch's padded size gets
        # its own cached tables). compat='correct' is this plugin's geometry, for weights
        # trained with it (or from scratch).
        compat='official',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512]))

# AdamW from the Swin 3x base (lr 1e-4, betas (0.9, 0.999), wd 0.05); no weight decay
# on any LayerNorm (the authors' `'norm': decay_mult 0` matches exactly the LayerNorms);
# mixed precision as the authors' --amp.
optim_wrapper = dict(
    type='AmpOptimWrapper', loss_scale='dynamic',
    paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.0))

# 8 GPUs x 2 images, as the Swin/Twins 3x recipes
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
