# MAE pre-training of plain VisionLLaMA-L for 800 epochs: mmpretrain's MAE ViT-L recipe
# (AdamW 2.4e-3, betas (0.9, 0.95), wd 0.05, mask 0.75, norm_pix, decoder fed from 1024-d
# latents) with the VisionLLaMAMAE encoder in the released Large-MAE layout (arch 'mae-l':
# d 1024, 24 layers, fused biased SwiGLU 11008, no layer scale). Batch as the authors' L run
# (mae_lama-large-p16_8xb512-amp-coslr-800e_in1k.py sets batch_size=256 despite its name):
# 8 x 256 = 2048 images per iteration at the same, unscaled lr 2.4e-3.
_base_ = 'mmpretrain::mae/mae_vit-large-p16_8xb512-amp-coslr-800e_in1k.py'

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
        arch='mae-l',
        img_size=224,
        patch_size=16,
        mask_ratio=0.75,
        init_cfg=dict(type='Xavier', layer='Linear', distribution='uniform')),
    neck=dict(embed_dim=1024))

# Re-declared here: inherited through `mmpretrain::`, the base's collate_fn dict carries a
# `_scope_` key that mmengine's Runner would pass on to default_collate() as an argument.
# batch: the authors' L run, 256 images per GPU (2048 in all) with the B lr, not rescaled
train_dataloader = dict(batch_size=256,
                        collate_fn=dict(_delete_=True, type='default_collate'))
auto_scale_lr = dict(base_batch_size=2048)  # --auto-scale-lr keeps 2.4e-3 at 8 x 256
