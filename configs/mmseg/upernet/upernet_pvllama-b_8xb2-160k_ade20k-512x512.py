# UperNet + Pyramid VisionLLaMA-B on ADE20K: the S recipe with the B backbone
# (the authors' twins_svt_lama_as-b config).
#   python tools/model_converters/official2vllama.py \
#       <Pyramid-VisionLLaMA-B.pth> pretrain/pvllama-b_in1k.pth
_base_ = ['./upernet_pvllama-s_8xb2-160k_ade20k-512x512.py']

checkpoint = 'pretrain/pvllama-b_in1k.pth'
model = dict(
    backbone=dict(
        arch='b',  # dims 96, 192, 384, 768; heads 3, 6, 12, 24; depths 2, 2, 18, 2
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
