"""Datasets for the generators: items are ``dict(inputs=[3, H, W] in [-1, 1], labels=int)``
(images, encoded by the generator's VAE every step as the authors) or
``dict(moments=[2C, h, w], labels=int)`` (cached VAE posteriors, see
tools/generation/extract_latents.py)."""
import os
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def center_crop_arr(img: Image.Image, size: int) -> np.ndarray:
    """ADM's centre crop: halve with BOX filtering while the short side is >= 2*size,
    bicubic-resize the short side to ``size``, then crop the centre size×size (uint8)."""
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = size / min(img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    arr = np.asarray(img.convert('RGB'))
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1).float() / 127.5 - 1  # copy


def list_class_folder(root: str) -> Tuple[List[Tuple[str, int]], List[str]]:
    """``root/<class>/<image>`` -> ([(path, label)], classes) with classes sorted by name
    (ImageNet's ``train/`` folder gives the standard 1000 labels)."""
    if not osp.isdir(root):
        raise FileNotFoundError(f'image folder not found: {root}')
    classes = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
    if not classes:
        raise FileNotFoundError(f'{root} has no class sub-folders (<root>/<class>/<image>)')
    items = []
    for label, name in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(osp.join(root, name))):
            items += [(osp.join(dirpath, f), label) for f in sorted(files)
                      if f.lower().endswith(IMG_EXTENSIONS)]
    if not items:
        raise FileNotFoundError(f'no images ({", ".join(IMG_EXTENSIONS)}) under {root}')
    return items, classes


class ClassImageFolder(Dataset):
    """Class-conditional images from ``data_root/data_prefix/<class>/<image>`` (e.g.
    ImageNet ``train/``), ADM centre crop to ``image_size`` and random horizontal flip."""

    def __init__(self, data_root: str, data_prefix: str = '', image_size: int = 256,
                 flip: bool = True):
        self.root = osp.join(data_root, data_prefix) if data_prefix else data_root
        self.items, self.classes = list_class_folder(self.root)
        self.image_size, self.flip = image_size, flip
        self.metainfo = dict(classes=tuple(self.classes))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict:
        path, label = self.items[i]
        with Image.open(path) as img:
            arr = center_crop_arr(img.convert('RGB'), self.image_size)
        if self.flip and np.random.rand() < 0.5:
            arr = arr[:, ::-1]
        return dict(inputs=to_tensor(arr), labels=label)


class CachedLatents(Dataset):
    """VAE posteriors cached by ``tools/generation/extract_latents.py`` in ``data_root``:
    ``moments.npy`` [N, 2, 2C, h, w] float16 (image, flipped image; mean | logvar) and
    ``labels.npy`` [N]. A random one of the two views is returned (the flip)."""

    def __init__(self, data_root: str, flip: bool = True):
        mpath, lpath = osp.join(data_root, 'moments.npy'), osp.join(data_root, 'labels.npy')
        for p in (mpath, lpath):
            if not osp.isfile(p):
                raise FileNotFoundError(f'{p} not found: cache the latents first with '
                                        'tools/generation/extract_latents.py')
        done = osp.join(data_root, 'complete')
        if not osp.isfile(done):
            raise FileNotFoundError(f'{data_root} is an unfinished latent cache (no '
                                    "'complete' marker): re-run extract_latents.py to resume")
        self.moments = np.load(mpath, mmap_mode='r')
        self.labels = np.load(lpath)
        if len(self.moments) != len(self.labels):
            raise ValueError(f'{data_root}: {len(self.moments)} latents but '
                             f'{len(self.labels)} labels')
        self.flip = flip
        names = osp.join(data_root, 'classes.txt')
        classes = open(names).read().split() if osp.isfile(names) else []
        self.metainfo = dict(classes=tuple(classes))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Dict:
        view = int(np.random.rand() < 0.5) if self.flip else 0
        m = torch.from_numpy(np.array(self.moments[i, view], dtype=np.float32))
        return dict(moments=m, labels=int(self.labels[i]))


def draw_class_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [size, size, 3]: shape kind ``label % 4`` in hue ``label * golden ratio``,
    side 40-65 % of the image, at a random place, on grey (110)."""
    import colorsys

    from PIL import ImageDraw
    hue = (label * 0.61803398875) % 1.0
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.9, 0.95))
    img = Image.new('RGB', (size, size), (110, 110, 110))
    draw = ImageDraw.Draw(img)
    s = int(size * rng.uniform(0.4, 0.65))
    x0, y0 = (int(v) for v in rng.integers(0, size - s, 2))
    box = (x0, y0, x0 + s, y0 + s)
    kind = label % 4
    if kind == 0:
        draw.ellipse(box, fill=colour)
    elif kind == 1:
        draw.rectangle(box, fill=colour)
    elif kind == 2:
        draw.polygon([(x0 + s // 2, y0), (x0 + s, y0 + s), (x0, y0 + s)], fill=colour)
    else:
        draw.ellipse(box, outline=colour, width=max(2, s // 4))
    return np.asarray(img)


class SyntheticClassImages(Dataset):
    """Generated class images held in memory (tests, the CPU demo): class k is a shape of
    its own hue and kind (disk, square, triangle, ring, ...) at a random place and size on
    a flat grey background. Simple on purpose: a tiny denoiser learns it in minutes."""

    def __init__(self, num_classes: int = 4, num_per_class: int = 64, image_size: int = 32,
                 seed: int = 0, flip: bool = True):
        rng = np.random.default_rng(seed)
        self.images = [draw_class_image(k, image_size, rng)
                       for k in range(num_classes) for _ in range(num_per_class)]
        self.labels = [k for k in range(num_classes) for _ in range(num_per_class)]
        self.flip = flip
        self.metainfo = dict(classes=tuple(f'class_{k}' for k in range(num_classes)))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Dict:
        arr = self.images[i]
        if self.flip and np.random.rand() < 0.5:
            arr = arr[:, ::-1]
        return dict(inputs=to_tensor(arr), labels=self.labels[i])

    def class_means(self) -> torch.Tensor:
        """[K, 3, H, W] mean image of each class in [-1, 1] (the demo's quality figure)."""
        x = torch.stack([to_tensor(a) for a in self.images])
        y = torch.tensor(self.labels)
        return torch.stack([x[y == k].mean(0) for k in range(int(y.max()) + 1)])
