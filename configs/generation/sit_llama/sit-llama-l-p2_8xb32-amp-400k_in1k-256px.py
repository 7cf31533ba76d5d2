# SiT-LLaMA-L/2, 464.01 M parameters: class-conditional ImageNet 256x256 of the paper.
# 8 GPUs x 32, AdamW 1e-4, EMA 0.9999, fp16 AMP, 400k iterations.
_base_ = ['../_base_/models/sit_llama.py', '../_base_/datasets/imagenet_256px.py',
          '../_base_/default_runtime.py']

model = dict(denoiser=dict(arch='L', patch_size=2))
train_cfg = dict(max_iters=400000)
