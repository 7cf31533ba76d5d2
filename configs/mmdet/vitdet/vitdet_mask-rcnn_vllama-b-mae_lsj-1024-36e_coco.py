# ViTDet Mask R-CNN with the MAE-pretrained plain VisionLLaMA-B: the authors' run
# (lamadet_mask-rcnn_vit-b-mae_lsj-800-36e.py on lsj-36e_coco-instance.py in their mmdet
# fork, trained with --amp): LSJ at 1024, 800-epoch MAE weights, layer-wise lr decay 0.7,
# AdamW lr 1e-4, wd 0.1, 8 GPUs x 4 images x 2 accumulated iterations = 64 images per
# optimizer step, 137250 iterations of 32 images (37.2 epochs; lr x0.1 at 102937 and
# 125812). Plain 2D RoPE as the authors ran it: the full 64x64 grid (positions 0..63) in the
# global blocks, window-local 0..13 in the window blocks, whose zero padding (64 -> 70) is
# not masked. The variant anchored at the 14x14 pre-training grid is
# vitdet_mask-rcnn_vllama-b-mae-as2drope_*. mmdet's projects/ViTDet is not in the mmdet
# wheel: SimpleFPN and LN2d come from vllama_mm; the rest is stock mmdet. Differences:
# docs/fidelity.md.
#   bash tools/dist_train.sh configs/mmdet/vitdet/vitdet_mask-rcnn_vllama-b-mae_lsj-1024-36e_coco.py 8
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py',
]

custom_imports = dict(imports=['vllama_mm.mmdet'], allow_failed_imports=False)
# atomic checkpoints and a collective timeout in seconds (docs/reliability.md)
env_cfg = dict(dist_cfg=dict(timeout=1800))

image_size = (1024, 1024)
norm_cfg = dict(type='LN2d', requires_grad=True)

model = dict(
    # Every input is 1024x1024, as in training, so the global blocks always see the
    # same 64x64 grid. At test time the padding happens here, not in the pipeline:
    # img_shape stays the resized image and boxes are clipped to it (mmdet's ViTDet
    # pads in the test pipeline, which lets boxes reach into the padding and breaks
    # mmdet's CPU mask pasting).
    data_preprocessor=dict(
        pad_size_divisor=image_size[0],
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        _delete_=True,
        type='VisionLLaMA',
        arch='mae-b',  # the released MAE layout (fused biased SwiGLU, hidden 8192)
        img_size=1024,  # as the authors: plain 2D RoPE over the 64x64 grid
        patch_size=16,
        rope_type='2d',
        with_cls_token=False,
        out_type='featmap',
        out_indices=-1,
        final_norm=False,
        # 14x14 windows (window-local RoPE 0..13) everywhere but 4 global blocks, which
        # see the whole 64x64 grid; padded window tokens take part unmasked (ViTDet)
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        window_pad_mask=False,
        drop_path_rate=0.1,
        # the authors' LLaMADET block: drop path on the attention branch only (their LLaMA
        # MLP has none), sampled per 14x14 window in window blocks (it acts on the windowed
        # tensor), per image in the global blocks
        drop_path_branches='attn',
        drop_path_per_window=True,
        init_cfg=dict(
            type='Pretrained',
            # the authors' 36-epoch run starts from the 800-epoch MAE weights
            checkpoint='pretrain/vllama-b-mae-800e.pth',
            prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='SimpleFPN',
        backbone_channel=768,
        in_channels=[192, 384, 768, 768],
        out_channels=256,
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# Large scale jitter: resize by 0.1-2.0 of 1024, crop 1024, pad 1024.
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),  # long side 1024
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]

# 32 images per iteration = 8 GPUs x 4 images; gradients accumulate over 2 iterations
# (optim_wrapper.accumulative_counts), so each optimizer step sees 64 images.
train_dataloader = dict(
    batch_size=4,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# Layer-wise lr decay 0.7 over the 12 blocks (patch embed deepest-decayed, heads x1),
# no weight decay on 1-D parameters (norms, biases), as ViTDet.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    accumulative_counts=2,
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7, flat_decay_mult=0.0),
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    clip_grad=None)

# The authors' iteration schedule (their lsj-36e_coco-instance.py), counted in iterations
# of 32 images: 137250 iters; lr x0.1 at 102937 and 125812; 250 iters linear warm-up.
max_iters = 137250
interval = 5000
dynamic_intervals = [(max_iters // interval * interval + 1, max_iters)]
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[102937, 125812],
        gamma=0.1)
]
train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=interval,
    dynamic_intervals=dynamic_intervals)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(
        type='AtomicCheckpointHook', by_epoch=False, save_last=True, interval=interval,
        max_keep_ckpts=2))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)

# the lr assumes 8 GPUs x 4 images per iteration with 2 accumulated iterations
# (`--auto-scale-lr` rescales it for another GPU count)
auto_scale_lr = dict(enable=False, base_batch_size=32)
