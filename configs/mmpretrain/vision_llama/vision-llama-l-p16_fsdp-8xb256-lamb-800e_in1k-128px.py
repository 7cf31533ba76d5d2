# vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py (same recipe) with FSDP2:
# parameters, gradients and LAMB state sharded over the GPUs, each block its own unit
# (docs/distributed.md). Launch: bash tools/dist_train.sh CONFIG 8 (or tools/slurm_train.sh).
# Expected memory per GPU: see this folder's README ("FSDP variants").
_base_ = './vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py'

# the base's bf16 autocast (AmpOptimWrapper) becomes FSDP2's bf16 policy on the blocks (the
# loss scaler of AmpOptimWrapper would see only its own gradient shard); same optimizer
model_wrapper_cfg = dict(type='FSDP2ModelWrapper',
                         mp_policy=dict(param_dtype='bfloat16', reduce_dtype='float32'))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer={{_base_.optim_wrapper.optimizer}},
                     paramwise_cfg={{_base_.optim_wrapper.paramwise_cfg}})
# the full state is gathered onto rank 0 and written there, atomically
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
