"""Synthetic COCO-format instance segmentation data for demos and tests.

Writes ``train2017/*.jpg``, ``val2017/*.jpg`` and
``annotations/instances_{train,val}2017.json`` in the exact COCO layout, so mmdet's
stock ``CocoDataset`` and ``CocoMetric`` (bbox + segm) read it unchanged. The
``categories`` list is the full COCO-80 list with the real ids, so the standard
80-class configs run on it as they are (pycocotools averages AP only over categories
that have ground truth); the objects use a few of them, each drawn as its own shape
and colour:

==============  ===  ==========================
category        id   shape
==============  ===  ==========================
sports ball     37   disk (24-gon polygon)
kite            38   diamond
tv              62   rectangle
stop sign       13   octagon
==============  ===  ==========================

Images have varying sizes and aspect ratios, a noisy background and 1-3
non-overlapping objects, each annotated with a polygon ``segmentation``, an xywh
``bbox``, its polygon ``area`` and ``iscrowd`` 0.
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from .output_dir import claim_output_dir

# COCO-80: (id, name), the official non-contiguous ids, in mmdet's CocoDataset order.
COCO_CATEGORIES: Tuple[Tuple[int, str], ...] = tuple(zip(
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
     27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
     52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
     78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90],
    ['person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
     'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
     'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
     'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
     'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
     'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
     'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
     'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse',
     'remote', 'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
     'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier',
     'toothbrush']))

# category name -> (shape, RGB colour); names are COCO's
OBJECTS: Dict[str, Tuple[str, Tuple[int, int, int]]] = {
    'sports ball': ('disk', (240, 200, 30)),
    'kite': ('diamond', (40, 200, 240)),
    'tv': ('rectangle', (230, 60, 60)),
    'stop sign': ('octagon', (80, 220, 90)),
}
_IDS = {name: cid for cid, name in COCO_CATEGORIES}


def shape_polygon(kind: str, box: Tuple[float, float, float, float]) -> List[float]:
    """Flat ``[x0, y0, x1, y1, ...]`` polygon of a shape inscribed in ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if kind == 'rectangle':
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    elif kind == 'diamond':
        pts = [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    elif kind in ('disk', 'octagon'):
        n, phase = (24, 0.0) if kind == 'disk' else (8, math.pi / 8)
        pts = [(cx + rx * math.cos(phase + 2 * math.pi * k / n),
                cy + ry * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]
    else:
        raise ValueError(f'unknown shape {kind!r}; choose one of rectangle, diamond, disk, octagon')
    return [round(float(v), 2) for p in pts for v in p]


def polygon_area(poly: Sequence[float]) -> float:
    """Shoelace area of a flat polygon."""
    x, y = np.asarray(poly[0::2], dtype=np.float64), np.asarray(poly[1::2], dtype=np.float64)
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _overlaps(box: Tuple[float, ...], boxes: List[Tuple[float, ...]], gap: float = 2) -> bool:
    return any(box[0] < b[2] + gap and b[0] < box[2] + gap and box[1] < b[3] + gap
               and b[1] < box[3] + gap for b in boxes)


def make_sample(height: int, width: int, rng: np.random.Generator,
                max_objects: int = 3) -> Tuple[Image.Image, List[Dict]]:
    """One image and its object dicts (``category``, ``polygon``, ``bbox`` xywh, ``area``)."""
    base = rng.integers(50, 110)
    noise = rng.normal(0, 15, (height, width, 3))
    img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    names = list(OBJECTS)
    boxes: List[Tuple[float, ...]] = []
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(20):  # rejection-sample a non-overlapping box
            side = min(height, width)
            w = float(rng.uniform(0.25, 0.5) * side)
            h = float(w * rng.uniform(0.7, 1.4))
            if h >= height - 2 or w >= width - 2:
                continue
            x0 = float(rng.uniform(1, width - w - 1))
            y0 = float(rng.uniform(1, height - h - 1))
            box = (x0, y0, x0 + w, y0 + h)
            if not _overlaps(box, boxes):
                break
        else:
            continue
        boxes.append(box)
        name = names[int(rng.integers(len(names)))]
        kind, colour = OBJECTS[name]
        poly = shape_polygon(kind, box)
        jitter = rng.integers(-20, 21, 3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter))
        draw.polygon(list(zip(poly[0::2], poly[1::2])), fill=fill)
        xs, ys = poly[0::2], poly[1::2]
        bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        objects.append(dict(category=name, polygon=poly,
                            bbox=[round(v, 2) for v in bbox], area=polygon_area(poly)))
    return img, objects


def generate(out_dir: str, num_train: int = 16, num_val: int = 8,
             img_size: Union[int, Tuple[int, int]] = (96, 128), seed: int = 0,
             max_objects: int = 3) -> Dict[str, Union[str, int, List[str]]]:
    """Write the dataset under ``out_dir``; returns its paths, sizes and category names.

    Args:
        out_dir: the config ``data_root``.
        num_train, num_val: images per split.
        img_size: ``(min_side, max_side)``: each image's height and width are drawn
            independently from this range (varying sizes and aspect ratios), or one int
            for square images of that size.
        seed: RNG seed (the data is a pure function of the arguments).
        max_objects: objects per image are drawn from ``1..max_objects``.

    Idempotent: an existing, complete dataset with the same parameters is kept; one
    written with others is replaced; foreign files are refused (:func:`claim_output_dir`).
    """
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    lo, hi = int(img_size[0]), int(img_size[1])
    if not 32 <= lo <= hi:
        raise ValueError(f'img_size must be (min_side, max_side) with 32 <= min <= max, '
                         f'got {img_size}')
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val must be >= 1, got {num_train}, {num_val}')
    info = dict(data_root=out_dir, num_train=num_train, num_val=num_val,
                ann_train=osp.join(out_dir, 'annotations', 'instances_train2017.json'),
                ann_val=osp.join(out_dir, 'annotations', 'instances_val2017.json'),
                classes=list(OBJECTS))
    stamp = osp.join(out_dir, '.complete')
    params = f'{num_train} {num_val} {lo} {hi} {seed} {max_objects}'
    if claim_output_dir(out_dir, params, ('train2017', 'val2017', 'annotations')):
        return info
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    ann_id = 1
    for split, n, id_base in (('train2017', num_train, 0), ('val2017', num_val, 100000)):
        os.makedirs(osp.join(out_dir, split), exist_ok=True)
        images, annotations = [], []
        for i in range(n):
            h, w = (int(v) for v in rng.integers(lo, hi + 1, 2))
            img, objects = make_sample(h, w, rng, max_objects)
            image_id = id_base + i + 1
            fname = f'{image_id:012d}.jpg'
            img.save(osp.join(out_dir, split, fname), quality=95)
            images.append(dict(id=image_id, file_name=fname, height=h, width=w))
            for obj in objects:
                annotations.append(dict(
                    id=ann_id, image_id=image_id, category_id=_IDS[obj['category']],
                    segmentation=[obj['polygon']], bbox=obj['bbox'], area=obj['area'],
                    iscrowd=0))
                ann_id += 1
        coco = dict(
            info=dict(description='vllama_mm synthetic COCO-format shapes', version='1.0'),
            licenses=[],
            images=images,
            annotations=annotations,
            categories=[dict(id=cid, name=name, supercategory='object')
                        for cid, name in COCO_CATEGORIES])
        with open(osp.join(out_dir, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
    with open(stamp, 'w') as f:
        f.write(params)
    return info
