# Tiny pyramid Mask R-CNN for trying MMDetection on a CPU in about a minute: the S recipe
# (mask-rcnn_pvllama-s_..., FPN, AdamW) with a tiny backbone, FPN and heads, ~128 px images,
# 2 epochs, no pretrained weights, on generated COCO-format data:
#   python tools/generate_synthetic_data.py coco data/synthetic_coco
#   python tools/train.py configs/mmdet/mask_rcnn/mask-rcnn_pvllama-tiny_fpn_1xb2-2e_synthetic-coco.py
_base_ = './mask-rcnn_pvllama-s_fpn_ms-crop-3x_coco.py'

data_root = 'data/synthetic_coco/'
dims = [32, 64, 96, 128]  # head dim 32: 1, 2, 3, 4 heads
ch = 32  # FPN and head width
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=dims, depths=[1, 1, 2, 1]),
                  drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=dims, out_channels=ch),
    rpn_head=dict(in_channels=ch, feat_channels=ch),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=ch),
        bbox_head=dict(in_channels=ch, fc_out_channels=64),
        mask_roi_extractor=dict(out_channels=ch),
        mask_head=dict(in_channels=ch, conv_out_channels=ch)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100),
                  rcnn=dict(score_thr=0.0, max_per_img=20)))  # an untrained model still predicts

# the recipe's multi-scale resize, scaled from 480..800 x 1333 to 96..160 x 267
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize', scales=[(267, 96), (267, 128), (267, 160)],
         keep_ratio=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(267, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2, num_workers=1,
    dataset=dict(data_root=data_root, pipeline=train_pipeline,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/')))
val_dataloader = dict(
    batch_size=2, num_workers=1,
    dataset=dict(data_root=data_root, pipeline=test_pipeline,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# the recipe's optimizer in fp32 (its fp16 AmpOptimWrapper needs a GPU)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2, val_interval=2)
default_hooks = dict(logger=dict(interval=4), checkpoint=dict(interval=2, max_keep_ckpts=1))
randomness = dict(seed=0)
