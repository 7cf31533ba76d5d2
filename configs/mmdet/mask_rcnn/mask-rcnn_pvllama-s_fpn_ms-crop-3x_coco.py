# Mask R-CNN FPN with the Pyramid VisionLLaMA-S backbone, 3x (36 epochs) schedule with
# the DETR-style multi-scale + crop augmentation of mmdet's Swin/Twins 3x configs
# (VisionLLaMA paper, COCO detection with the pyramid backbone; docs/design.md).
# Batch 16 = 8 GPUs x 2 images; AdamW lr 1e-4, wd 0.05 (none on norms).
#   bash tools/dist_train.sh configs/mmdet/mask_rcnn/mask-rcnn_pvllama-s_fpn_ms-crop-3x_coco.py 8 --amp
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'

custom_imports = dict(imports=['vllama_mm.mmdet'], allow_failed_imports=False)

# ImageNet-1k weights of PyramidVisionLLaMA-S in this plugin's layout (an mmpretrain
# checkpoint, hence prefix 'backbone.'): convert the released checkpoint with
#   python tools/model_converters/official2vllama.py <Pyramid-VisionLLaMA-S.pth> pretrain/pvllama-s_in1k.pth
pretrained = 'pretrain/pvllama-s_in1k.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='PyramidVisionLLaMA',
        arch='s',
        # pre-training size: fixes each stage's AS2DRoPE anchor grid (56, 28, 14, 7);
        # every batch's own padded (H, W) gets its own (cached) RoPE tables
        img_size=224,
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        # The released pyramid weights were trained by the official code: GSA keys at its
        # positions (row length W), its seg/det GSA scale 14 / H_stage, unmasked zero-padded
        # LSA windows, flooring GSA sub-sampling (what official2vllama.py prints for them;
        # docs/design.md, RoPE). Delete these four lines to use the correct geometry (e.g. with
        # weights trained by vllama_mm, or from scratch).
        rope_compat='official',
        rope_scale='official',
        window_pad_mask=False,
        gsa_pool='floor',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512]))

# AdamW from the Swin 3x base (lr 1e-4, betas (0.9, 0.999), wd 0.05); no weight decay
# on any LayerNorm (the Swin/Twins configs' `'norm': decay_mult 0` by module type).
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.0))

# 8 GPUs x 2 images, as the Swin/Twins 3x recipes
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
