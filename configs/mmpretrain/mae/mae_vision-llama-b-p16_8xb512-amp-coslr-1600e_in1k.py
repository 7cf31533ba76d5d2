# MAE pre-training of plain VisionLLaMA-B (released MAE layout, arch 'mae-b') for 1600 epochs:
# mmpretrain's 1600-epoch MAE ViT-B recipe (8 x 512 = 4096 images, AdamW 2.4e-3, betas
# (0.9, 0.95), wd 0.05, mask 0.75, norm_pix) with the VisionLLaMAMAE encoder.
# Fine-tuned: 84.3 top-1, linear probe 71.7 (paper); see benchmarks/.
_base_ = 'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-1600e_in1k.py'

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
        img_size=224,
        patch_size=16,
        mask_ratio=0.75,
        init_cfg=dict(type='Xavier', layer='Linear', distribution='uniform')),
    neck=dict(embed_dim=768))

# Re-declared here: inherited through `mmpretrain::`, the base's collate_fn dict carries a
# `_scope_` key that mmengine's Runner would pass on to default_collate() as an argument.
train_dataloader = dict(collate_fn=dict(_delete_=True, type='default_collate'))
