# UperNet + MAE-pre-trained plain VisionLLaMA-L on ADE20K: the authors' L run
# (lama-large_upernet_8xb2-800-amp-160k_ade20k-512x512.py): the B recipe with the L encoder
# (d 1024, 24 layers; features of blocks 7, 11, 15, 23), 1 image per GPU with gradient
# accumulation over 2 iterations (still 16 images per optimizer step on 8 GPUs), plain 2D
# RoPE over the 32x32 grid. The paper reports ADE20K for the MAE B encoder only.
#   python tools/model_converters/official2vllama.py \
#       <VisionLLaMA-Large-MAE-800e.pth> pretrain/vllama-l-mae-800e.pth
_base_ = ['./upernet_vllama-b-mae_8xb2-amp-160k_ade20k-512x512.py']

checkpoint = 'pretrain/vllama-l-mae-800e.pth'
model = dict(
    backbone=dict(
        arch='mae-l',
        out_indices=(7, 11, 15, 23),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(embed_dim=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1024),
    auxiliary_head=dict(in_channels=1024))

# 8 GPUs x 1 image x 2 accumulated iterations = 16 images per optimizer step
optim_wrapper = dict(accumulative_counts=2)
train_dataloader = dict(batch_size=1)
