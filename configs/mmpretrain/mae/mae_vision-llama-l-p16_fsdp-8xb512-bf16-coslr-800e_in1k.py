# mae_vision-llama-l-p16_8xb512-amp-coslr-800e_in1k.py with FSDP2 (docs/distributed.md). One
# change of recipe: bf16 compute through FSDP2's mixed-precision policy (fp32 master weights,
# fp32 gradient reduction) instead of fp16 AMP, whose loss scaler cannot see the sharded
# gradients of the other ranks; no loss scaling is needed in bf16. The optimizer is the base
# recipe's (mmpretrain's MAE ViT-L: AdamW 2.4e-3 for 4096 images, betas (0.9, 0.95), wd 0.05,
# no decay on ln / bias / pos_embed / mask_token / cls_token), written out because the base's
# AmpOptimWrapper arguments do not apply to OptimWrapper.
# Expected memory per GPU: see this folder's README ("FSDP variants").
_base_ = './mae_vision-llama-l-p16_8xb512-amp-coslr-800e_in1k.py'

model_wrapper_cfg = dict(type='FSDP2ModelWrapper',
                         mp_policy=dict(param_dtype='bfloat16', reduce_dtype='float32'))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.5e-4 * 4096 / 256, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'ln': dict(decay_mult=0.0),
        'bias': dict(decay_mult=0.0),
        'pos_embed': dict(decay_mult=0.),
        'mask_token': dict(decay_mult=0.),
        'cls_token': dict(decay_mult=0.)
    }))
