# MAE pre-training of plain VisionLLaMA-B on ImageNet-1k (paper §MAE): mmpretrain's MAE ViT-B
# recipe unchanged -- 800 epochs, 8 GPUs x 512 = 4096 images, AdamW lr 1.5e-4 x 4096 / 256 =
# 2.4e-3, betas (0.9, 0.95), wd 0.05 (none on norms, biases, class/mask tokens), 40 warm-up
# epochs then cosine, mask ratio 0.75, normalised-pixel L2 loss, 8-layer 512-d decoder, AMP --
# with the encoder swapped for VisionLLaMAMAE (kept tokens rotated at their grid positions).
#
# arch='mae-b' is the layout of the released VisionLLaMA-Base-MAE weights (fused biased SwiGLU
# 8192, no layer scale, LN eps 1e-6; 255.8 M encoder parameters), i.e. what the paper's MAE "B"
# is. For the 86 M paper-size encoder see mae_vision-llama-b-86m-p16_8xb512-amp-coslr-800e_in1k.py.
_base_ = 'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-800e_in1k.py'

custom_imports = dict(imports=['vllama_mm.mmpretrain'], allow_failed_imports=False)
# atomic checkpoints and a collective timeout in seconds (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
env_cfg = dict(dist_cfg=dict(timeout=1800))
# no `_scope_` key in the visualizer (mmpretrain's browse_dataset passes it on as kwargs)
visualizer = dict(_delete_=True, type='UniversalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')])

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionLLaMAMAE',
        arch='mae-b',
        img_size=224,  # AS2DRoPE anchor: the 14x14 pre-training grid
        patch_size=16,
        mask_ratio=0.75,
        # xavier-uniform linears, as mmpretrain's MAEViT initialises its encoder
        init_cfg=dict(type='Xavier', layer='Linear', distribution='uniform')),
    neck=dict(embed_dim=768))

# Re-declared here: inherited through `mmpretrain::`, the base's collate_fn dict carries a
# `_scope_` key that mmengine's Runner would pass on to default_collate() as an argument.
train_dataloader = dict(collate_fn=dict(_delete_=True, type='default_collate'))
