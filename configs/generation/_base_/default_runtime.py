# Runtime of the generation configs: vllama_mm's own scope, iteration-based training,
# EMA of the weights every step (decay 0.9999), AdamW 1e-4 without weight decay, fp16 AMP.
default_scope = 'vllama_mm'
custom_imports = dict(imports=['vllama_mm.generation'], allow_failed_imports=False)

train_cfg = dict(type='IterBasedTrainLoop', max_iters=400000)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = None
test_dataloader = None
test_evaluator = None

optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.0))
param_scheduler = []  # constant learning rate

# mmengine's momentum is the weight of the new value: 1e-4 == decay 0.9999. The EMA
# weights are what a checkpoint's state_dict holds (the trained ones go to ema_state_dict).
custom_hooks = [dict(type='EMAHook', momentum=1e-4, update_buffers=False,
                     priority='ABOVE_NORMAL')]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # atomic writes, honest auto-resume, a stop at non-finite losses (docs/reliability.md)
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=50000,
                    max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))

env_cfg = dict(cudnn_benchmark=False,
               mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl', timeout=1800))  # a frozen rank fails, not hangs
log_processor = dict(by_epoch=False, window_size=100)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
# each rank draws its own noise and timesteps, as DiT/SiT's train.py seeds every rank
# differently (global_seed * world_size + rank); mmengine adds the rank to the seed
randomness = dict(seed=0, diff_rank_seed=True)
