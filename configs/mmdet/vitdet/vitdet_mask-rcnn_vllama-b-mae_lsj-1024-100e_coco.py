# ViTDet Mask R-CNN with MAE-pretrained plain VisionLLaMA-B, LSJ 1024, 100 epochs: the
# schedule of mmdet's / detectron2's ViTDet-B baseline (ViT-B: 51.6 box / 45.7 mask AP),
# 64 images per iteration (8 GPUs x 8, no accumulation); the model and RoPE of the 36e run.
#   bash tools/dist_train.sh configs/mmdet/vitdet/vitdet_mask-rcnn_vllama-b-mae_lsj-1024-100e_coco.py 8
_base_ = './vitdet_mask-rcnn_vllama-b-mae_lsj-1024-36e_coco.py'

# 100 ep = 184375 iters x 64 images / 118000 images per epoch; lr x0.1 at 88 and 96 ep
max_iters = 184375
interval = 5000
dynamic_intervals = [(max_iters // interval * interval + 1, max_iters)]
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[163889, 177546],
        gamma=0.1)
]
train_cfg = dict(max_iters=max_iters, dynamic_intervals=dynamic_intervals)
train_dataloader = dict(batch_size=8)
optim_wrapper = dict(accumulative_counts=1)
auto_scale_lr = dict(base_batch_size=64)
