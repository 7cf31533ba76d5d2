# vision-llama-l-p16_8xb64-20e_in1k-128px-ft-224px.py (same recipe, fp32 as that row) with FSDP2
# (docs/distributed.md). It loads the 128-px checkpoint of the FSDP or the plain pre-training
# config alike: FSDP2 checkpoints hold the full weights under the usual names.
# Expected memory per GPU: see this folder's README ("FSDP variants").
_base_ = './vision-llama-l-p16_8xb64-20e_in1k-128px-ft-224px.py'

model_wrapper_cfg = dict(type='FSDP2ModelWrapper')
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
