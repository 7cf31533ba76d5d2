# DiT-LLaMA-XL/2 with FSDP2 (docs/distributed.md): dit-llama-xl-p2_8xb32-amp-2400k_in1k-256px.py with parameters,
# gradients and AdamW state sharded over the GPUs, each block its own unit. One change of
# recipe: bf16 compute through FSDP2's mixed-precision policy (fp32 master weights and EMA, fp32
# gradient reduction) instead of fp16 AMP, whose loss scaler cannot see the sharded gradients
# of the other ranks. The EMA (decay 0.9999) averages the gathered weights into a full copy on
# every GPU. For less activation memory add model.denoiser.with_cp (docs/benchmark.md).
# Expected memory per GPU: see this folder's README ("FSDP variants").
_base_ = './dit-llama-xl-p2_8xb32-amp-2400k_in1k-256px.py'

model_wrapper_cfg = dict(type='FSDP2ModelWrapper',
                         mp_policy=dict(param_dtype='bfloat16', reduce_dtype='float32'))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0))
custom_hooks = [dict(type='EMAHook', ema_type='FSDP2ExponentialMovingAverage', momentum=1e-4,
                     update_buffers=False, priority='ABOVE_NORMAL')]
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
