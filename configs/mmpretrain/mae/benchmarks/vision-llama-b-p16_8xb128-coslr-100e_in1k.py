# End-to-end fine-tuning of the MAE-pre-trained VisionLLaMA-B on ImageNet-1k (paper: 84.0 top-1
# after 800 MAE epochs, 84.3 after 1600): mmpretrain's MAE ViT-B fine-tuning recipe -- 100 epochs,
# 8 GPUs x 128 images, AdamW lr 2e-3, wd 0.05, 5 warm-up epochs then cosine, RandAugment m9,
# random erasing 0.25, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, drop path 0.1, global
# average pooling -- with layer-wise lr decay 0.45 (the authors' value for B; MAE's own is 0.65).
#
# Weights: the released VisionLLaMA-Base-MAE 1600-epoch checkpoint converted with
#   python tools/model_converters/official2vllama.py <VisionLLaMA-Base-MAE-1600e.pth> pretrain/vllama-b-mae-1600e.pth
# or the last checkpoint of mae_vision-llama-b-p16_8xb512-amp-coslr-1600e_in1k.py (same layout).
_base_ = 'mmpretrain::mae/benchmarks/vit-base-p16_8xb128-coslr-100e_in1k.py'

custom_imports = dict(imports=['vllama_mm.mmpretrain'], allow_failed_imports=False)
# atomic checkpoints and a collective timeout in seconds (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
env_cfg = dict(dist_cfg=dict(timeout=1800))
# no `_scope_` key in the visualizer (mmpretrain's browse_dataset passes it on as kwargs)
visualizer = dict(_delete_=True, type='UniversalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')])

checkpoint = 'pretrain/vllama-b-mae-1600e.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionLLaMA',
        arch='mae-b',  # the released MAE layout (fused biased SwiGLU 8192, no layer scale)
        img_size=224,
        patch_size=16,
        # the released MAE encoder never ran its class token through the blocks (it is
        # appended after the last one): fine-tune without it, as the authors do
        with_cls_token=False,
        out_type='avg_featmap',  # GAP of the patch tokens, then the new LayerNorm ``ln2``
        final_norm=False,  # the checkpoint's final ``ln1`` is dropped on loading
        drop_path_rate=0.1,
        # the authors' MAE-layout block: drop path on the attention branch only (their
        # LLaMA MLP has none)
        drop_path_branches='attn',
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))

# Layer-wise lr decay through vllama_mm's constructor: parameter at depth d (patch embed block i -> i + 1, ``ln2`` and the head 13) gets lr x 0.45 ** (13 - d); no
# weight decay on 1-D parameters (norms, biases), as the stock recipe.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',  # the authors fine-tune with --amp (fp16 autocast, loss scaling)
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        layer_decay_rate=0.45,
        flat_decay_mult=0.0))
