# SiT-LLaMA-XL/2 trained from cached SD-VAE latents (tools/generation/extract_latents.py)
# instead of encoding every image every step: same recipe, no VAE encoder in the loop.
_base_ = ['./sit-llama-xl-p2_8xb32-amp-400k_in1k-256px.py']

train_dataloader = dict(
    num_workers=4,
    dataset=dict(_delete_=True, type='CachedLatents', data_root='data/imagenet_latents_256',
                 flip=True))
