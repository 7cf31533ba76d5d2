# End-to-end fine-tuning of the MAE-pre-trained VisionLLaMA-L with FSDP2 (docs/distributed.md).
# Not a paper row (the paper fine-tunes MAE B only): the B fine-tuning config
# (vision-llama-b-p16_8xb128-coslr-100e_in1k.py: our encoder, GAP, no class token, Mixup/CutMix,
# RandAugment, mixed precision) with the values of mmpretrain's MAE ViT-L fine-tuning recipe -- 50 epochs,
# AdamW lr 4e-3 for 1024 images, layer-wise lr decay 0.75, drop path 0.2, 5 warm-up epochs then
# cosine to 1e-6.
#
# Weights: the released VisionLLaMA-Large-MAE 800-epoch checkpoint converted with
#   python tools/model_converters/official2vllama.py <VisionLLaMA-Large-MAE epoch_800.pth> pretrain/vllama-l-mae-800e.pth
# or the last checkpoint of mae_vision-llama-l-p16_*_in1k.py (same layout).
# Expected memory per GPU: see ../README.md ("FSDP variants").
_base_ = './vision-llama-b-p16_8xb128-coslr-100e_in1k.py'

checkpoint = 'pretrain/vllama-l-mae-800e.pth'
model = dict(
    backbone=dict(arch='mae-l', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    head=dict(in_channels=1024))
# the B config's AMP (AmpOptimWrapper) becomes FSDP2's bf16 policy on the blocks (the loss
# scaler would see only its own gradient shard)
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     constructor='LayerDecayOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=4e-3, weight_decay=0.05, betas=(0.9, 0.999)),
                     paramwise_cfg=dict(layer_decay_rate=0.75, flat_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=45, by_epoch=True, begin=5, end=50, eta_min=1e-6,
         convert_to_iter_based=True)
]
train_cfg = dict(by_epoch=True, max_epochs=50)

model_wrapper_cfg = dict(type='FSDP2ModelWrapper',
                         mp_policy=dict(param_dtype='bfloat16', reduce_dtype='float32'))
