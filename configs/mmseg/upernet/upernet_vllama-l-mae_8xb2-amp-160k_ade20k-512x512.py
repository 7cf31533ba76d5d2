# UperNet + MAE-pre-trained plain VisionLLaMA-L on ADE20K: the B recipe with the L encoder
# (d 1024, 24 layers; features of blocks 7, 11, 15, 23). The paper reports ADE20K for the MAE
# B encoder only; layer decay (0.65) and the rest of the recipe are B's, unchanged.
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
