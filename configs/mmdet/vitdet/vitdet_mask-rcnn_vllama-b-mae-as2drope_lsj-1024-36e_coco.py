# Variant of vitdet_mask-rcnn_vllama-b-mae_lsj-1024-36e_coco.py (not the authors' run): the
# global blocks use AS2DRoPE anchored at the 14x14 MAE pre-training grid, so the 64x64 grid
# is mapped into the span the weights were pre-trained on instead of positions 0..63
# (window blocks keep window-local positions 0..13). Same weights, a different network.
_base_ = './vitdet_mask-rcnn_vllama-b-mae_lsj-1024-36e_coco.py'

model = dict(backbone=dict(img_size=224, rope_type='as2d'))
