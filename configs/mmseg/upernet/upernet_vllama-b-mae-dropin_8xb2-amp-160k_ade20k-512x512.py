# Drop-in example: mmseg's own MAE-B UperNet config, unchanged except for the backbone.
# Everything else (data, neck, heads, schedule, slide inference) comes from the upstream file.
_base_ = ['mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py']

custom_imports = dict(imports=['vllama_mm.mmseg'], allow_failed_imports=False)
# atomic checkpoints and a collective timeout in seconds (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
env_cfg = dict(dist_cfg=dict(timeout=1800))

model = dict(
    # upstream points ``model.pretrained`` at an MAE-ViT file and EncoderDecoder would pass
    # it on to the backbone; VisionLLaMA loads its weights through ``init_cfg`` instead.
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='VisionLLaMA',
        arch='mae-b',
        with_cls_token=False,  # the released MAE encoder's class token skips the blocks
        img_size=512,  # plain 2D RoPE over the 32x32 grid, as the authors' ADE20K run
        rope_type='2d',
        out_type='featmap',
        out_indices=(3, 5, 7, 11),
        final_norm=False,
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained', checkpoint='pretrain/vllama-b-mae-1600e.pth',
            prefix='backbone.')))

# Upstream uses mmseg's ``LayerDecayOptimizerConstructor``: it raises NotImplementedError for
# any backbone class name without 'BEiT'/'MAE'/'ConvNeXt' in it, and our constructor takes the
# depth from ``backbone.get_layer_depth`` so it has no ``num_layers`` key. Same decay (0.65),
# same no-decay rule (1-D parameters; there is no class token here).
optim_wrapper = dict(
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        _delete_=True,
        layer_decay_rate=0.65,
        flat_decay_mult=0.0))
# Note: upstream's ``fp16 = dict(...)`` is an mmseg 0.x key that mmengine ignores; train with
# ``tools/train.py CONFIG --amp`` (AmpOptimWrapper) for mixed precision.
