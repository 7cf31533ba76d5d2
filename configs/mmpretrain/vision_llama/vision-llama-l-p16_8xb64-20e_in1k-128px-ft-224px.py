# Fine-tune the 128-px VisionLLaMA-L (vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py) at 224 px
# for 20 epochs, as the authors' L fine-tuning command: the B fine-tuning recipe with drop path
# 0.45 and, since that command does not set `--reprob 0`, random erasing p 0.25 (the base
# pipeline's). 8 GPUs x 64 images.
_base_ = './vision-llama-b-p16_8xb64-20e_in1k-192px-ft-224px.py'

checkpoint = 'work_dirs/vision-llama-l-p16_8xb256-lamb-800e_in1k-128px/epoch_800.pth'

model = dict(
    backbone=dict(
        arch='l',
        img_size=224,  # AS2DRoPE anchored at the 14x14 fine-tuning grid (see the B config)
        drop_path_rate=0.45,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    head=dict(
        in_channels=1024,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='head.')))

bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
