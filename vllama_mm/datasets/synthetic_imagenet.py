"""Synthetic ImageNet-style classification data: ``{train,val}/<class>/*.JPEG`` + ``meta/*.txt``.

Each class is a coloured shape (its own hue and shape kind) at a random position and
size on a noisy background with a distractor blob, so the classes are learnable by a
tiny model in a couple of minutes but not from a single pixel. The folder layout is
the one mmpretrain's ``CustomDataset`` / ``ImageNet`` read (class folders, or
``meta/{train,val}.txt`` lines ``<class>/<file> <label>``).
"""
import colorsys
import os
import os.path as osp
from typing import Dict, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from .output_dir import claim_output_dir, stamp_text

SHAPES = ('disk', 'square', 'triangle', 'cross', 'ring')


def _class_style(k: int, num_classes: int) -> Tuple[Tuple[int, int, int], str]:
    hue = (k * 0.61803398875) % 1.0  # golden-ratio hues: well separated
    rgb = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 0.95))
    return rgb, SHAPES[k % len(SHAPES)]


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: Tuple[int, int, int, int],
                colour: Tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if kind == 'disk':
        draw.ellipse(box, fill=colour)
    elif kind == 'square':
        draw.rectangle(box, fill=colour)
    elif kind == 'triangle':
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    elif kind == 'cross':
        w, h = x1 - x0, y1 - y0
        draw.rectangle((x0 + w // 3, y0, x1 - w // 3, y1), fill=colour)
        draw.rectangle((x0, y0 + h // 3, x1, y1 - h // 3), fill=colour)
    else:  # ring
        w = max(2, (x1 - x0) // 4)
        draw.ellipse(box, outline=colour, width=w)


def make_image(label: int, num_classes: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB ``size``×``size`` image of class ``label``."""
    base = rng.integers(40, 120)
    noise = rng.normal(0, 18, (size, size, 3))
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    # distractor: a small blob of a random other colour
    d = int(size * 0.15)
    dx, dy = rng.integers(0, size - d, 2)
    draw.ellipse((dx, dy, dx + d, dy + d), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    colour, kind = _class_style(label, num_classes)
    s = int(size * rng.uniform(0.35, 0.6))
    x, y = rng.integers(0, size - s, 2)
    _draw_shape(draw, kind, (int(x), int(y), int(x + s), int(y + s)), colour)
    return img


def generate(out_dir: str, num_train: int = 64, num_val: int = 16, img_size: int = 64,
             num_classes: int = 10, seed: int = 0,
             writer: str = '') -> Dict[str, Union[str, int]]:
    """Write ``num_train``/``num_val`` images per class; returns the paths and counts.

    Idempotent: an existing, complete dataset with the same parameters is kept; one
    written with others is replaced; foreign files, and a dataset another ``writer``
    (e.g. ``'tools/demo.py'``) marked, are refused (:func:`claim_output_dir`).
    """
    stamp = osp.join(out_dir, '.complete')
    params = f'{num_train} {num_val} {img_size} {num_classes} {seed}'
    info = dict(data_root=out_dir, num_classes=num_classes,
                num_train=num_train * num_classes, num_val=num_val * num_classes)
    if claim_output_dir(out_dir, params, ('train', 'val', 'meta', 'classes.txt'), writer):
        return info
    rng = np.random.default_rng(seed)
    classes = [f'class_{k:02d}' for k in range(num_classes)]
    os.makedirs(osp.join(out_dir, 'meta'), exist_ok=True)
    for split, n in (('train', num_train), ('val', num_val)):
        lines = []
        for k, name in enumerate(classes):
            folder = osp.join(out_dir, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                fname = f'{split}_{k:02d}_{i:05d}.JPEG'
                make_image(k, num_classes, img_size, rng).save(osp.join(folder, fname),
                                                                quality=95)
                lines.append(f'{name}/{fname} {k}')
        with open(osp.join(out_dir, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    with open(osp.join(out_dir, 'classes.txt'), 'w') as f:
        f.write('\n'.join(classes) + '\n')
    with open(stamp, 'w') as f:
        f.write(stamp_text(params, writer))
    return info
