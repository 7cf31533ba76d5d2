# Tiny ViTDet Mask R-CNN for trying MMDetection on a CPU in about a minute: the B recipe
# (vitdet_mask-rcnn_vllama-b-mae_...: window + global blocks, SimpleFPN, LN2d heads,
# layer-wise lr decay 0.7, large-scale jitter) with a tiny backbone, neck and heads, 128 px
# instead of 1024, 20 iterations, fp32, no pretrained weights, on generated COCO-format data:
#   python tools/generate_synthetic_data.py coco data/synthetic_coco
#   python tools/train.py configs/mmdet/vitdet/vitdet_mask-rcnn_vllama-tiny_1xb2-20i_synthetic-coco.py
_base_ = './vitdet_mask-rcnn_vllama-b-mae_lsj-1024-36e_coco.py'

data_root = 'data/synthetic_coco/'
image_size = (128, 128)
dim = 64
ch = 32  # FPN and head width
model = dict(
    data_preprocessor=dict(
        pad_size_divisor=image_size[0],
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        arch=dict(_delete_=True,  # a custom arch dict replaces the base's preset name
                  embed_dims=dim, num_layers=4, num_heads=2, feedforward_channels=128,
                  ffn_bias=True),
        img_size=64,
        window_size=4,
        global_attn_indexes=(1, 3),
        drop_path_rate=0.0,
        init_cfg=None),
    neck=dict(backbone_channel=dim, in_channels=[16, 32, 64, 64], out_channels=ch),
    rpn_head=dict(in_channels=ch, feat_channels=ch),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=ch),
        bbox_head=dict(in_channels=ch, conv_out_channels=ch, fc_out_channels=64),
        mask_roi_extractor=dict(out_channels=ch),
        mask_head=dict(in_channels=ch, conv_out_channels=ch)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100),
                  rcnn=dict(score_thr=0.0, max_per_img=20)))  # an untrained model still predicts

# the recipe's large-scale jitter at 128 px instead of 1024
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2, num_workers=1, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4)))
val_dataloader = dict(
    batch_size=2, num_workers=1, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# fp32 (AMP needs a GPU); the recipe's layer-wise lr decay 0.7, over the 4 tiny layers
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=2e-4))
max_iters = 20
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters,
                 dynamic_intervals=None)
default_hooks = dict(logger=dict(interval=5),
                     checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=5)
randomness = dict(seed=0)
