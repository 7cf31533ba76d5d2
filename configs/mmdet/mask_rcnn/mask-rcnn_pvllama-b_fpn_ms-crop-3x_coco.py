# Mask R-CNN FPN with Pyramid VisionLLaMA-B, 3x multi-scale + crop (the paper's COCO
# pyramid result: Twins-SVT-B 48.0 box / 43.0 mask AP, VisionLLaMA-B +1.1 / +0.8).
#   bash tools/dist_train.sh configs/mmdet/mask_rcnn/mask-rcnn_pvllama-b_fpn_ms-crop-3x_coco.py 8
_base_ = './mask-rcnn_pvllama-s_fpn_ms-crop-3x_coco.py'

pretrained = 'pretrain/pvllama-b_in1k.pth'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.2,  # as the authors' B run
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
