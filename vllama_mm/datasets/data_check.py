"""Dataset checks that name the bad file: a quick one before training, a full scan on demand.

The libraries find most data problems late (a zero-byte JPEG kills a data-loader worker
hours into an epoch), or never (an empty class folder shifts every later class index of
``CustomDataset``; train and val folders with other class lists evaluate against the
wrong labels; an ADE label map with values past the class count trains on garbage).
Checked, from the config's dataset dicts (nothing is built):

* images (every format): zero-byte or undecodable files;
* ImageNet-style folders (``CustomDataset`` / ``ImageNet`` without ``ann_file``): an
  empty class folder, train and val class lists that differ;
* COCO json (``ann_file`` ending in ``.json``): ``images`` entries without
  ``id``/``file_name``/``height``/``width``, annotations without ``image_id``/``bbox``/
  ``category_id`` (and ``segmentation`` when the pipeline loads masks), unknown
  category ids, image ids that no image has;
* segmentation maps (``data_prefix`` with ``seg_map_path``): missing, not single-channel,
  another size than the image, labels out of range for ``decode_head.num_classes``
  (taking ``reduce_zero_label`` into account; 255 is the ignore label).

``quick=True`` (``tools/train.py`` before building the Runner) looks at every class
folder and decodes a few images of each, a few per other dataset, and skips annotation
files over :data:`QUICK_JSON_BYTES`; the full scan (``tools/analysis/check_dataset.py
CONFIG``) reads everything. Also: class folders holding only images the dataset's
``extensions`` skip (``.webp`` for mmpretrain), COCO files whose every box has zero size
or every polygon fewer than 3 points (mmdet drops those instances), images whose size
differs from their COCO entry.
"""
import json
import os
import sys
import os.path as osp
from typing import Dict, List, Optional, Tuple

from mmengine.config import Config

from ..engine.validate import ConfigError, is_remote, mode_datasets

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
#: Images decoded per dataset by the quick check.
QUICK_IMAGES = 4
#: Images decoded per class folder by the quick check (every class is looked at).
QUICK_PER_CLASS = 2
#: The extensions mmpretrain's ``CustomDataset`` / ``ImageNet`` read by default (no .webp).
MMPRETRAIN_EXTS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif')
#: Annotation files larger than this are left to the full scan by the quick check.
QUICK_JSON_BYTES = 64 * 2**20
IGNORE_LABEL = 255


class DataError(ConfigError):
    """A dataset file that cannot be trained on; the message names the file(s)."""


def image_problem(path: str, decode: bool = True) -> Optional[str]:
    """Why ``path`` is not a usable image (``None``: it is)."""
    if not osp.isfile(path):
        return f'{path}: file not found'
    if osp.getsize(path) == 0:
        return f'{path}: empty file (0 bytes)'
    if decode:
        from PIL import Image
        try:
            with Image.open(path) as img:
                img.load()
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds
            return f'{path}: cannot be decoded as an image ({type(e).__name__}: {e})'
    return None


def _files(folder: str, limit: Optional[int],
           exts: Tuple[str, ...] = IMAGE_EXTS) -> List[str]:
    out = []
    with os.scandir(folder) as it:
        for entry in sorted(it, key=lambda e: e.name) if limit is None else it:
            if entry.is_file() and entry.name.lower().endswith(exts):
                out.append(entry.path)
                if limit is not None and len(out) >= limit:
                    break
    return out


def check_class_folders(root: str, limit: Optional[int],
                        extensions: Optional[Tuple[str, ...]] = None
                        ) -> Tuple[List[str], List[str]]:
    """``(classes, problems)`` of an ImageNet-style ``root/<class>/<image>`` folder.

    Every class folder is looked at (``limit``: images decoded per class, ``None``: all).
    ``extensions``: the ones the dataset reads (mmpretrain: :data:`MMPRETRAIN_EXTS`); a
    class whose images all have other extensions (e.g. only ``.webp``) has no samples.
    """
    exts = tuple(e.lower() for e in (extensions or IMAGE_EXTS))
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    problems = []
    if not classes:
        problems.append(f'{root}: no class folders')
    for name in classes:
        folder = osp.join(root, name)
        files = _files(folder, limit, exts)
        if not files:
            others = sorted({osp.splitext(p)[1].lower() for p in _files(folder, 50)})
            if others:
                problems.append(f'{folder}: only {"/".join(others)} images, which the dataset '
                                f'skips (it reads {", ".join(exts)}; set the dataset\'s '
                                'extensions or convert them): the class would have no '
                                'samples and shift every later class index')
            else:
                problems.append(f'{folder}: empty class folder (no images); it would still '
                                'take a class index, shifting every later class')
        for path in files:
            problem = image_problem(path)
            if problem:
                problems.append(problem)
    return classes, problems


def _degenerate_box(ann: Dict) -> bool:
    """mmdet's rule for boxes it drops: width or height < 1 or area <= 0."""
    bbox = ann.get('bbox')
    if not (isinstance(bbox, list) and len(bbox) == 4):
        return False
    w, h = bbox[2], bbox[3]
    return w < 1 or h < 1 or ann.get('area', 1) <= 0


def _degenerate_polygons(seg: object) -> bool:
    """All polygons of a (list-of-polygons) segmentation have fewer than 3 points (mmdet
    ignores such instances); RLE dicts are not judged."""
    if not isinstance(seg, list):
        return False
    return all(not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 for poly in seg)


def check_coco(ann_file: str, img_dir: str, need_masks: bool,
               limit: Optional[int], notes: Optional[List[str]] = None) -> List[str]:
    """Problems of a COCO-format instance annotation file (and its first images).

    Beyond missing fields and ids: every box of zero size, every polygon with fewer
    than 3 points (with masks) -- mmdet drops those instances, so the run would train
    on nothing -- and images whose file size differs from the entry's ``width`` x
    ``height``. Some (not all) degenerate instances are a line in ``notes``.
    """
    try:
        with open(ann_file) as f:
            coco = json.load(f)
    except (OSError, ValueError) as e:
        return [f'{ann_file}: not readable as JSON ({e})']
    problems: List[str] = []
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(coco.get(key), list):
            problems.append(f'{ann_file}: no {key!r} list')
    if problems:
        return problems
    cat_ids = {c.get('id') for c in coco['categories']}
    image_ids = set()
    for i, img in enumerate(coco['images']):
        missing = [k for k in ('id', 'file_name', 'height', 'width') if k not in img]
        if missing:
            problems.append(f'{ann_file}: images[{i}] lacks {missing}')
            continue
        image_ids.add(img['id'])
    need = ['image_id', 'bbox', 'category_id'] + (['segmentation'] if need_masks else [])
    boxes = polys = checked = 0
    for i, ann in enumerate(coco['annotations']):
        missing = [k for k in need if k not in ann]
        where = f"{ann_file}: annotations[{i}] (id {ann.get('id')})"
        if missing:
            problems.append(f'{where} lacks {missing}')
            continue
        if ann.get('iscrowd', 0):
            continue
        checked += 1
        bbox = ann['bbox']
        if not (isinstance(bbox, list) and len(bbox) == 4):
            problems.append(f'{where}: bbox must be [x, y, w, h], got {bbox!r}')
        boxes += _degenerate_box(ann)
        polys += need_masks and _degenerate_polygons(ann.get('segmentation'))
        if ann['category_id'] not in cat_ids:
            problems.append(f"{where}: category_id {ann['category_id']!r} is not in "
                            'categories')
        if ann['image_id'] not in image_ids:
            problems.append(f"{where}: image_id {ann['image_id']!r} has no images entry")
        if len(problems) > 20:
            break
    for count, what in ((boxes, 'boxes of zero size (w or h < 1, or area <= 0)'),
                        (polys, 'segmentations whose polygons have fewer than 3 points')):
        if count and count == checked:
            problems.append(f'{ann_file}: all {count} annotations have {what}; mmdet drops '
                            'such instances, so training would see no objects')
        elif count and notes is not None:
            notes.append(f'{ann_file}: {count} of {checked} annotations have {what} '
                         '(mmdet ignores them)')
    images = coco['images'] if limit is None else coco['images'][:limit]
    for img in images:
        if 'file_name' not in img:
            continue
        path = osp.join(img_dir, img['file_name'])
        problem = image_problem(path)
        if problem:
            problems.append(problem)
            continue
        from PIL import Image
        with Image.open(path) as im:
            size = im.size
        if 'width' in img and 'height' in img and size != (img['width'], img['height']):
            problems.append(f"{path}: the image is {size[0]}x{size[1]} (w x h) but "
                            f"{ann_file} says {img['width']}x{img['height']}: boxes and masks "
                            'would not match it')
    return problems


def check_seg_pairs(img_dir: str, seg_dir: str, img_suffix: str, seg_suffix: str,
                    num_classes: Optional[int], reduce_zero_label: bool,
                    limit: Optional[int]) -> List[str]:
    """Problems of segmentation image / label-map pairs (``name+img_suffix`` ->
    ``name+seg_suffix``)."""
    import numpy as np
    from PIL import Image
    names = sorted(n for n in os.listdir(img_dir) if n.endswith(img_suffix))
    if not names:
        return [f'{img_dir}: no *{img_suffix} images']
    top = None
    if num_classes is not None:  # highest valid raw label value
        top = num_classes if reduce_zero_label else num_classes - 1
    problems = []
    for name in names if limit is None else names[:limit]:
        img_path = osp.join(img_dir, name)
        seg_path = osp.join(seg_dir, name[:-len(img_suffix)] + seg_suffix)
        for path in (img_path, seg_path):
            problem = image_problem(path)
            if problem:
                problems.append(problem)
        if problems and problems[-1].startswith((img_path, seg_path)):
            continue
        with Image.open(seg_path) as seg, Image.open(img_path) as img:
            if seg.mode not in ('L', 'P', 'I', 'I;16'):
                problems.append(f'{seg_path}: label map must be single-channel (mode L or P), '
                                f'got mode {seg.mode} (a colour rendering?)')
                continue
            if seg.size != img.size:
                problems.append(f'{seg_path}: size {seg.size} differs from its image '
                                f'{img_path} {img.size} (w, h)')
            labels = np.unique(np.asarray(seg))
        bad = [int(v) for v in labels if v != IGNORE_LABEL and top is not None and v > top]
        if bad:
            problems.append(
                f'{seg_path}: labels {bad[:8]} out of range: {num_classes} classes'
                + (' with reduce_zero_label (raw 1..' if reduce_zero_label else ' (0..')
                + f'{top}, {IGNORE_LABEL} = ignore)')
    return problems


def _pipeline_loads_masks(dataset: Dict) -> bool:
    return any(isinstance(t, dict) and t.get('type') == 'LoadAnnotations' and
               t.get('with_mask', False) for t in dataset.get('pipeline') or [])


def _join(root: str, p: str) -> str:
    return p if (not root or osp.isabs(p)) else osp.join(root, p)


def _num_classes(cfg: Config) -> Optional[int]:
    model = cfg.get('model') or {}
    head = model.get('decode_head') or {}
    if isinstance(head, list):
        head = head[-1]
    n = head.get('num_classes') if isinstance(head, dict) else None
    return n if isinstance(n, int) else None


def check_data(cfg: Config, mode: str = 'train', quick: bool = True) -> List[str]:
    """Run the checks for the datasets ``mode`` uses; returns one line per dataset checked.

    Raises :class:`DataError` listing (up to 10) problems, each naming its file.
    """
    limit = QUICK_IMAGES if quick else None
    problems: List[str] = []
    report: List[str] = []
    class_lists: Dict[str, Tuple[str, List[str]]] = {}
    seen = set()
    for key, ds in mode_datasets(cfg, mode):
        if isinstance(ds.get('dataset'), dict) or ds.get('datasets'):
            continue  # a wrapper: its datasets come next
        root = ds.get('data_root') or ''
        if not isinstance(root, str) or is_remote(root):
            continue
        prefix = ds.get('data_prefix')
        ann = ds.get('ann_file') or ''
        ident = (root, str(prefix), ann)
        if ident in seen:  # test_dataloader = val_dataloader
            continue
        seen.add(ident)
        if isinstance(prefix, dict) and 'seg_map_path' in prefix and (
                ds.get('type') == 'ADE20KDataset' or 'img_suffix' in ds):
            # other datasets' file suffixes are class defaults not visible here
            img_dir = _join(root, prefix.get('img_path', ''))
            seg_dir = _join(root, prefix['seg_map_path'])
            found = check_seg_pairs(img_dir, seg_dir, ds.get('img_suffix', '.jpg'),
                                    ds.get('seg_map_suffix', '.png'), _num_classes(cfg),
                                    ds.get('reduce_zero_label',
                                           ds.get('type') == 'ADE20KDataset'), limit)
            report.append(f'{key}: segmentation pairs in {img_dir}')
        elif isinstance(ann, str) and ann.endswith('.json'):
            ann_path = _join(root, ann)
            img = prefix.get('img', '') if isinstance(prefix, dict) else (prefix or '')
            if quick and osp.getsize(ann_path) > QUICK_JSON_BYTES:
                report.append(f'{key}: {ann_path} is large; checked by '
                              'tools/analysis/check_dataset.py only')
                continue
            notes: List[str] = []
            found = check_coco(ann_path, _join(root, img), _pipeline_loads_masks(ds), limit,
                               notes)
            for note in notes:  # partial degeneracy: not fatal, but said
                print(f'[vllama_mm] data check: {note}', file=sys.stderr)
            report += notes
            report.append(f'{key}: COCO annotations {ann_path}')
        elif isinstance(prefix, str) and not ann and \
                ds.get('type') in ('CustomDataset', 'ImageNet', 'mmpretrain.CustomDataset'):
            folder = _join(root, prefix)
            classes, found = check_class_folders(
                folder, QUICK_PER_CLASS if quick else None,
                tuple(ds.get('extensions') or MMPRETRAIN_EXTS))
            class_lists[key] = (folder, classes)
            report.append(f'{key}: {len(classes)} class folders in {folder}')
        else:
            continue
        problems += found
    if len(class_lists) > 1:
        (k1, (f1, c1)), *others = class_lists.items()
        for k2, (f2, c2) in others:
            if c1 != c2:
                only1, only2 = sorted(set(c1) - set(c2)), sorted(set(c2) - set(c1))
                problems.append(
                    f'{f1} and {f2} have different class folders ({len(c1)} vs {len(c2)}; '
                    f'only in the first: {only1[:5]}, only in the second: {only2[:5]}): '
                    'class indices would not match between training and evaluation')
    if problems:
        more = f' (+{len(problems) - 10} more)' if len(problems) > 10 else ''
        raise DataError('dataset check failed: ' + '; '.join(problems[:10]) + more)
    return report
