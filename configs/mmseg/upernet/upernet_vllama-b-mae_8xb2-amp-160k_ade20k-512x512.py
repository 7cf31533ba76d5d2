# UperNet + MAE-pre-trained plain VisionLLaMA-B on ADE20K: the authors' run
# (lama-base_upernet_8xb2-1600-amp-160k_ade20k-512x512.py in their mmseg fork, trained with
# --amp): blocks 3, 5, 7, 11 -> Feature2Pyramid (x4, x2, x1, x0.5) -> UperNet, 160k iters,
# 16 images per iteration (8 GPUs x 2), 512x512 crops, AdamW lr 1e-4, wd 0.05, layer-wise
# lr decay 0.65, mixed precision, sliding-window inference. RoPE as the authors ran it:
# plain 2D RoPE over the 32x32 fine-tuning grid. The variant anchored at the 14x14
# pre-training grid is upernet_vllama-b-mae-as2drope_*. Differences: docs/fidelity.md.
#
# Pre-trained weights: convert the released VisionLLaMA-Base-MAE (1600 ep) checkpoint first,
#   python tools/model_converters/official2vllama.py \
#       <VisionLLaMA-Base-MAE-1600e.pth> pretrain/vllama-b-mae-1600e.pth
_base_ = [
    'mmseg::_base_/models/upernet_mae.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]

custom_imports = dict(imports=['vllama_mm.mmseg'], allow_failed_imports=False)
# atomic checkpoints and a collective timeout in seconds (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
env_cfg = dict(dist_cfg=dict(timeout=1800))

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
checkpoint = 'pretrain/vllama-b-mae-1600e.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='VisionLLaMA',
        arch='mae-b',  # the released MAE layout: d 768, 12 layers, biased fused SwiGLU 8192
        # the authors build the backbone at img_size=512: unscaled 2D RoPE, positions
        # 0..31 on the 32x32 grid of the 512 crops (the pre-training grid was 14x14)
        img_size=512,
        patch_size=16,
        rope_type='2d',
        # The released MAE encoder never ran its class token through the blocks (it is
        # appended after the last one): no class token here; its checkpoint entry is dropped.
        with_cls_token=False,
        out_type='featmap',
        out_indices=(3, 5, 7, 11),
        final_norm=False,  # the checkpoint's final ``ln1`` is dropped on loading
        drop_path_rate=0.1,
        # the authors' MAE-layout block: drop path on the attention branch only
        drop_path_branches='attn',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(embed_dim=768, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[768, 768, 768, 768], num_classes=150, channels=768),
    auxiliary_head=dict(in_channels=768, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))

# Layer-wise lr decay through vllama_mm's constructor (mmseg's own one accepts only BEiT/MAE/
# ConvNeXt class names): parameter at depth d of L blocks gets lr * 0.65 ** (L + 1 - d)
# (patch embed and class token d = 0, block i d = i + 1, neck and heads scale 1); no weight
# decay on 1-D parameters (norms, biases) nor on the class token, as mmseg's MAE recipe.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        layer_decay_rate=0.65,
        flat_decay_mult=0.0))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]

# 8 GPUs x 2 images per GPU = 16 images per iteration
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
