# Mask R-CNN FPN with Pyramid VisionLLaMA-L, 3x multi-scale + crop.
#   bash tools/dist_train.sh configs/mmdet/mask_rcnn/mask-rcnn_pvllama-l_fpn_ms-crop-3x_coco.py 8
_base_ = './mask-rcnn_pvllama-s_fpn_ms-crop-3x_coco.py'

pretrained = 'pretrain/pvllama-l_in1k.pth'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.3,  # no published L detection run: Swin-B's 3x value
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
