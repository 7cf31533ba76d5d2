# UperNet + Pyramid VisionLLaMA-L on ADE20K: the S recipe with the L backbone
# and drop path 0.3 (the authors' twins_svt_lama_as-l config).
#   python tools/model_converters/official2vllama.py \
#       <Pyramid-VisionLLaMA-L.pth> pretrain/pvllama-l_in1k.pth
_base_ = ['./upernet_pvllama-s_8xb2-160k_ade20k-512x512.py']

checkpoint = 'pretrain/pvllama-l_in1k.pth'
model = dict(
    backbone=dict(
        arch='l',  # dims 128, 256, 512, 1024; heads 4, 8, 16, 32; depths 2, 2, 18, 2
        drop_path_rate=0.3,  # the authors' L run (S and B: 0.2)
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
