# vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py (same recipe, fp32 as that row) with FSDP2:
# parameters, gradients and LAMB state sharded over the GPUs, each block its own unit
# (docs/distributed.md). Launch: bash tools/dist_train.sh CONFIG 8 (or tools/slurm_train.sh).
# Expected memory per GPU: see this folder's README ("FSDP variants").
_base_ = './vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py'

model_wrapper_cfg = dict(type='FSDP2ModelWrapper')
# the full state is gathered onto rank 0 and written there, atomically
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
