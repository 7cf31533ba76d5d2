# UperNet + Pyramid VisionLLaMA-S on ADE20K: the authors' run
# (twins_svt_lama_as-s_uperhead_8xb2-160k_ade20k-512x512.py in their mmseg fork, on mmseg's
# Twins-SVT-S UperNet recipe): 160k iters, 16 images per iteration (8 GPUs x 2), 512x512
# crops, AdamW lr 6e-5, wd 0.01 (none on norms), linear warm-up 1500 iters then poly(1.0),
# sliding-window inference (512 crops, stride 341), mixed precision. Remaining
# differences: docs/fidelity.md.
#
# Pre-trained weights: convert the released ImageNet-1k checkpoint first,
#   python tools/model_converters/official2vllama.py \
#       <Pyramid-VisionLLaMA-S.pth> pretrain/pvllama-s_in1k.pth
# (the converter writes an mmengine checkpoint whose keys start with ``backbone.``).
_base_ = [
    'mmseg::_base_/models/twins_pcpvt-s_upernet.py', 'mmseg::_base_/datasets/ade20k.py',
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
        img_size=224,  # ImageNet pre-training size
        # per-stage LayerNorm in the main path; its output is each returned map
        # (B, C_s, H/4 .. H/32) and the next stage's input. The four norms are new
        # layers (weight 1, bias 0) when loading the ImageNet weights.
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        # The released weights were trained by the authors' code: reproduce its geometry
        # (GSA key positions, unmasked padded LSA windows, flooring GSA pooling) and its
        # seg/det GSA position scale 14 / H_stage. compat='correct' is this plugin's
        # geometry, for weights trained with it (or from scratch).
        compat='official',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))

# AdamW; no weight decay on any parameter whose name contains 'norm' (as the authors'
# Twins recipe: block norms ``ln1``/``ln2`` are their ``norm1``/``norm2``, plus the patch
# embed, GSA and stage norms). Layer scales are decayed, as in the authors' run.
# Mixed precision: the authors trained with --amp (their train_p_lama.sh).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            '.ln1.': dict(decay_mult=0.0),
            '.ln2.': dict(decay_mult=0.0),
            'norm': dict(decay_mult=0.0),
        }))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]

# 8 GPUs x 2 images per GPU = 16 images per iteration
train_dataloader = dict(batch_size=2, num_workers=2)
val_dataloader = dict(batch_size=1, num_workers=4)
test_dataloader = val_dataloader
