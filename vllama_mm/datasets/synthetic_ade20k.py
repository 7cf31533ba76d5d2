"""Synthetic ADE20K-style segmentation data, in the exact on-disk layout of ADEChallengeData2016.

    <out_dir>/images/training/ADE_train_XXXXXXXX.jpg        RGB images
    <out_dir>/images/validation/ADE_val_XXXXXXXX.jpg
    <out_dir>/annotations/training/ADE_train_XXXXXXXX.png   uint8 label maps (mode 'L')
    <out_dir>/annotations/validation/ADE_val_XXXXXXXX.png

Label values follow ADE20K: 0 is "other" (mmseg's ``reduce_zero_label=True`` maps it to
the ignore index 255) and 1..150 are the 150 classes (mapped to 0..149). MMSegmentation's
own ``ADE20KDataset`` (``img_suffix='.jpg'``, ``seg_map_suffix='.png'``) and ``IoUMetric``
read the folder unchanged, so a config only has to point ``data_root`` at it.

Each image is a Voronoi partition of the canvas into a few regions; every region is either
"other" (label 0, plain noise) or one of ``num_classes`` ADE classes spread over 1..150.
A class has its own colour *and* texture (stripes with a class-specific period and
orientation, or checkerboard), so the label of a pixel follows from local appearance and a
tiny model reaches a measurable mIoU within a few dozen iterations, while single pixels
near region borders and the noise keep the task from being trivial.
"""
import colorsys
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .output_dir import claim_output_dir

SPLITS = (('training', 'train'), ('validation', 'val'))
NUM_ADE_CLASSES = 150


def _size_hw(img_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    if (not isinstance(img_size, (tuple, list)) or len(img_size) != 2
            or not all(isinstance(s, int) for s in img_size)):
        raise TypeError(f'img_size must be an int or a (height, width) pair of ints, '
                        f'got {img_size!r}')
    h, w = img_size
    if h < 16 or w < 16:
        raise ValueError(f'img_size must be at least 16x16, got {h}x{w}')
    return h, w


def class_labels(num_classes: int) -> List[int]:
    """ADE label values (1..150) used by the generator: spread over the whole range,
    first and last class included, so the 0..149 mapping is exercised at both ends."""
    if not 1 <= num_classes <= NUM_ADE_CLASSES:
        raise ValueError(f'num_classes must be in [1, {NUM_ADE_CLASSES}], got {num_classes}')
    if num_classes == 1:
        return [1]
    return [int(round(v)) for v in np.linspace(1, NUM_ADE_CLASSES, num_classes)]


def _class_texture(k: int, num_classes: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """[H, W, 3] float image of class index ``k``: its hue modulated by its texture."""
    hue = (k * 0.61803398875) % 1.0  # golden-ratio hues: well separated
    rgb = np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.9)) * 255.0
    kind = k % 3
    period = 4 + 2 * (k // 3 % 3)  # 4, 6 or 8 px
    if kind == 0:  # horizontal stripes
        pattern = (yy // (period // 2)) % 2
    elif kind == 1:  # vertical stripes
        pattern = (xx // (period // 2)) % 2
    else:  # checkerboard
        pattern = ((yy // (period // 2)) + (xx // (period // 2))) % 2
    shade = 0.65 + 0.35 * pattern[..., None]  # [H, W, 1] in {0.65, 1.0}
    return rgb[None, None, :] * shade


def make_sample(labels: Sequence[int], img_size: Tuple[int, int], rng: np.random.Generator,
                p_other: float = 0.15) -> Tuple[np.ndarray, np.ndarray]:
    """One (image [H, W, 3] uint8, label map [H, W] uint8) pair."""
    h, w = img_size
    yy, xx = np.mgrid[0:h, 0:w]
    num_regions = int(rng.integers(3, 7))
    seeds = rng.uniform(0, 1, (num_regions, 2)) * np.array([h, w])
    # Voronoi regions: nearest seed of every pixel -> [H, W] region id
    dist = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    region = dist.argmin(axis=0)
    img = np.empty((h, w, 3), np.float64)
    seg = np.zeros((h, w), np.uint8)
    for r in range(num_regions):
        mask = region == r
        if rng.uniform() < p_other:  # "other": grey noise, label 0 (ignored in training/eval)
            img[mask] = rng.uniform(60, 160)
            continue
        k = int(rng.integers(len(labels)))
        img[mask] = _class_texture(k, len(labels), yy, xx)[mask]
        seg[mask] = labels[k]
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), seg


def generate(out_dir: str, num_train: int = 16, num_val: int = 8,
             img_size: Union[int, Tuple[int, int]] = (64, 64), seed: int = 0,
             num_classes: int = 8) -> Dict[str, object]:
    """Write ``num_train`` training and ``num_val`` validation pairs; returns a summary.

    Args:
        out_dir: dataset root (the config's ``data_root``).
        num_train, num_val: number of image/annotation pairs per split.
        img_size: ``(height, width)`` (or an int) of every image.
        seed: RNG seed; the output is a pure function of all arguments.
        num_classes: how many of the 150 ADE classes appear (see :func:`class_labels`).

    Idempotent: an existing, complete dataset written with the same arguments is kept; one
    written with other arguments is replaced. Refuses (FileExistsError) to write into
    folders holding files it did not write.
    """
    if not isinstance(out_dir, str) or not out_dir:
        raise TypeError(f'out_dir must be a non-empty str, got {out_dir!r}')
    for name, n in (('num_train', num_train), ('num_val', num_val)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f'{name} must be a positive int, got {n!r}')
    hw = _size_hw(img_size)
    labels = class_labels(num_classes)
    info: Dict[str, object] = dict(data_root=out_dir, num_train=num_train, num_val=num_val,
                                   img_size=hw, labels=labels)
    stamp = osp.join(out_dir, '.complete')
    params = f'{num_train} {num_val} {hw[0]} {hw[1]} {seed} {num_classes}'
    owned = [osp.join(kind, folder) for kind in ('images', 'annotations')
             for folder, _ in SPLITS]
    if claim_output_dir(out_dir, params, owned):
        return info
    rng = np.random.default_rng(seed)
    for (folder, prefix), n in zip(SPLITS, (num_train, num_val)):
        img_dir = osp.join(out_dir, 'images', folder)
        ann_dir = osp.join(out_dir, 'annotations', folder)
        for d in (img_dir, ann_dir):
            os.makedirs(d, exist_ok=True)
        for i in range(n):
            img, seg = make_sample(labels, hw, rng)
            name = f'ADE_{prefix}_{i + 1:08d}'
            Image.fromarray(img).save(osp.join(img_dir, name + '.jpg'), quality=95)
            Image.fromarray(seg).save(osp.join(ann_dir, name + '.png'))  # 2-D uint8: mode 'L'
    with open(stamp, 'w') as f:
        f.write(params)
    return info
