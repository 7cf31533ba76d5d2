# UperNet + Pyramid VisionLLaMA-S on ADE20K (paper §ADE20K; recipe of mmseg's Twins-SVT /
# Swin UperNet configs): 160k iters, 16 images per iteration (8 GPUs x 2), 512x512 crops,
# AdamW lr 6e-5, wd 0.01, linear warm-up 1500 iters then poly(1.0) decay.
#
# Pre-trained weights: convert the released ImageNet-1k checkpoint first,
#   python tools/model_converters/official2vllama.py \
#       <Pyramid-VisionLLaMA-S.pth> pretrain/pvllama-s_in1k.pth
# (the converter writes an mmengine checkpoint whose keys start with ``backbone.``).
_base_ = [
    'mmseg::_base_/models/upernet_swin.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]

custom_imports = dict(imports=['vllama_mm.mmseg'], allow_failed_imports=False)
# atomic checkpoints and a collective timeout in seconds (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
env_cfg = dict(dist_cfg=dict(timeout=1800))

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
checkpoint = 'pretrain/pvllama-s_in1k.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='PyramidVisionLLaMA',
        arch='s',  # dims 64, 128, 256, 512; heads 2, 4, 8, 16; depths 2, 2, 10, 4
        img_size=224,  # ImageNet pre-training size: AS2DRoPE anchors 56, 28, 14, 7
        out_type='featmap',  # per-stage LN'd maps (B, C_s, H/4 .. H/32)
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,  # as mmseg's Twins-SVT S/B/L UperNet configs
        # The released pyramid weights were trained by the official code: GSA keys at its
        # positions (row length W), its seg/det GSA scale 14 / H_stage, unmasked zero-padded
        # LSA windows, flooring GSA sub-sampling (what official2vllama.py prints for them).
        # Delete these four lines to use the correct geometry (e.g. with weights trained by
        # vllama_mm, or from scratch).
        rope_compat='official',
        rope_scale='official',
        window_pad_mask=False,
        gsa_pool='floor',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))

# AdamW; no weight decay on the backbone's LayerNorms (``ln1``/``ln2`` in blocks, ``norm`` in
# patch embeds, GSA and per-stage outputs) nor on layer scale. VisionLLaMA has no position
# parameters to exempt: RoPE tables are derived buffers, not in the state dict.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            '.ln1.': dict(decay_mult=0.0),
            '.ln2.': dict(decay_mult=0.0),
            'norm': dict(decay_mult=0.0),
            '.ls1.': dict(decay_mult=0.0),
            '.ls2.': dict(decay_mult=0.0),
        }))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]

# 8 GPUs x 2 images per GPU = 16 images per iteration
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
