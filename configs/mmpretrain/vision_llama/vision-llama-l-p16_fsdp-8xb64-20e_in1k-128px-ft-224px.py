# vision-llama-l-p16_8xb64-20e_in1k-128px-ft-224px.py (same recipe) with FSDP2
# (docs/distributed.md). It loads the 128-px checkpoint of the FSDP or the plain pre-training
# config alike: FSDP2 checkpoints hold the full weights under the usual names.
# Expected memory per GPU: see this folder's README ("FSDP variants").
_base_ = './vision-llama-l-p16_8xb64-20e_in1k-128px-ft-224px.py'

# the base's bf16 autocast (AmpOptimWrapper) becomes FSDP2's bf16 policy on the blocks (the
# loss scaler of AmpOptimWrapper would see only its own gradient shard); same optimizer
model_wrapper_cfg = dict(type='FSDP2ModelWrapper',
                         mp_policy=dict(param_dtype='bfloat16', reduce_dtype='float32'))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer={{_base_.optim_wrapper.optimizer}},
                     paramwise_cfg={{_base_.optim_wrapper.paramwise_cfg}})
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
