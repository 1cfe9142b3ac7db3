"""A tiny COCO-format instance-segmentation dataset, drawn from a seed.

Layout (what mmdet's ``CocoDataset`` reads)::

    root/train/0000.png            RGB image, size x size
    root/val/0000.png
    root/annotations/train.json    COCO instances: boxes, polygons, areas
    root/annotations/val.json

Each image shows a textured background (smooth colour waves plus grain)
with 1 to ``max_objects`` filled shapes (square, disc, triangle) that never
touch, so every polygon is the exact outline of its visible pixels. Each
shape kind has its own hue band (with jitter) and the shapes are rotated
and sized at random, so a small detector learns the task in minutes on a
CPU while still having to find tight boxes and masks.
"""
import colorsys
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

CLASSES: Tuple[str, ...] = ('square', 'disc', 'triangle')
# Colours for drawing predictions, one RGB triple per class.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 60, 60), (60, 200, 60), (70, 110, 240))
# Centre hue (degrees) of each kind's colours, 120 degrees apart.
_SHAPE_HUES: Dict[str, float] = {'square': 0., 'disc': 120.,
                                 'triangle': 240.}
_DISC_VERTICES = 24  # the disc is stored and drawn as this regular polygon
SPLITS: Dict[str, int] = {'train': 400, 'val': 50}

Polygon = List[Tuple[float, float]]


def make_coco_toy(root: str, seed: int = 0, *, size: int = 160,
                  num_train: int = SPLITS['train'],
                  num_val: int = SPLITS['val'],
                  max_objects: int = 4) -> Dict[str, str]:
    """Write the toy dataset under ``root`` (overwriting files of the same
    name). The same arguments always produce the same files.

    Args:
        root: Output folder; gets ``train/``, ``val/`` and ``annotations/``.
        seed: Seed of the random generator.
        size: Side of the square images in pixels (at least 64).
        num_train: Number of training images.
        num_val: Number of validation images.
        max_objects: Most shapes per image (at least 1 per image).

    Returns:
        The annotation file of each split:
        ``{'train': '.../train.json', 'val': '.../val.json'}``.
    """
    if not isinstance(root, str) or not root:
        raise ValueError(f'root must be a non-empty path, got {root!r}')
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f'seed must be an int >= 0, got {seed!r}')
    if size < 64:
        raise ValueError(f'size must be >= 64 pixels, got {size}; smaller '
                         'images leave no room for the shapes')
    for name, count in (('num_train', num_train), ('num_val', num_val),
                        ('max_objects', max_objects)):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f'{name} must be an int >= 1, got {count!r}')
    ann_files = {}
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    # One generator per split, so the val split does not depend on
    # num_train.
    for split_index, (split, count) in enumerate(
            (('train', num_train), ('val', num_val))):
        rng = np.random.default_rng([seed, split_index])
        os.makedirs(osp.join(root, split), exist_ok=True)
        coco = _empty_coco()
        for image_id in range(count):
            file_name = f'{image_id:04d}.png'
            image, shapes = draw_sample(rng, size, max_objects)
            Image.fromarray(image).save(osp.join(root, split, file_name))
            coco['images'].append(dict(id=image_id, file_name=file_name,
                                       width=size, height=size))
            for label, polygon in shapes:
                coco['annotations'].append(_annotation(
                    len(coco['annotations']), image_id, label, polygon))
        ann_files[split] = osp.join(root, 'annotations', f'{split}.json')
        with open(ann_files[split], 'w') as f:
            json.dump(coco, f)
    return ann_files


def draw_sample(rng: np.random.Generator, size: int,
                max_objects: int) -> Tuple[np.ndarray, List[Tuple[int,
                                                                  Polygon]]]:
    """Draw one image and its shapes.

    Returns:
        ``(image, shapes)``: a uint8 ``(size, size, 3)`` RGB array and a list
        of ``(class_index, polygon)`` with polygon vertices in pixels.
    """
    canvas = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(canvas)
    shapes: List[Tuple[int, Polygon]] = []
    boxes: List[Sequence[float]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(len(CLASSES)))
        polygon = _place(rng, CLASSES[label], size, boxes)
        if polygon is None:
            continue  # no free room left for this shape
        draw.polygon(polygon, fill=_shape_colour(rng, CLASSES[label]))
        shapes.append((label, polygon))
        boxes.append(_bounds(polygon))
    image = np.asarray(canvas).astype(np.float64)
    image += rng.normal(0, 5, image.shape)  # sensor-like grain
    return np.clip(image, 0, 255).astype(np.uint8), shapes


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-saturation texture: a few random colour waves over a grey."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size, 3), rng.uniform(70, 180)) + rng.uniform(
        -15, 15, 3)
    for _ in range(3):
        freq = rng.uniform(1, 6, 2)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (freq[0] * xs + freq[1] * ys) + phase)
        image += wave[..., None] * rng.uniform(5, 20, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def _outline(kind: str, half: float, angle: float) -> Polygon:
    """Vertices of a shape of circumradius-like size ``half`` centred at 0."""
    if kind == 'square':
        corners = [(-half, -half), (half, -half), (half, half), (-half, half)]
    elif kind == 'disc':
        steps = np.arange(_DISC_VERTICES) * 2 * np.pi / _DISC_VERTICES
        corners = [(half * np.cos(a), half * np.sin(a)) for a in steps]
    elif kind == 'triangle':
        corners = [(half * np.cos(a), half * np.sin(a))
                   for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
    else:
        raise ValueError(f'unknown shape {kind!r}; expected one of {CLASSES}')
    cos, sin = np.cos(angle), np.sin(angle)
    return [(x * cos - y * sin, x * sin + y * cos) for x, y in corners]


def _place(rng: np.random.Generator, kind: str, size: int,
           taken: List[Sequence[float]]) -> Optional[Polygon]:
    """A random polygon of ``kind`` whose box keeps 3 px from every box in
    ``taken`` and from the image border; None after 30 failed tries."""
    for _ in range(30):
        half = rng.uniform(0.09, 0.22) * size
        outline = _outline(kind, half, rng.uniform(0, 2 * np.pi))
        x0, y0, x1, y1 = _bounds(outline)
        cx = rng.uniform(3 - x0, size - 3 - x1)
        cy = rng.uniform(3 - y0, size - 3 - y1)
        polygon = [(round(cx + x, 2), round(cy + y, 2)) for x, y in outline]
        x0, y0, x1, y1 = _bounds(polygon)
        if all(x1 + 3 < b[0] or b[2] + 3 < x0 or y1 + 3 < b[1]
               or b[3] + 3 < y0 for b in taken):
            return polygon
    return None


def _bounds(polygon: Polygon) -> Tuple[float, float, float, float]:
    xs, ys = zip(*polygon)
    return min(xs), min(ys), max(xs), max(ys)


def _shape_colour(rng: np.random.Generator, kind: str) -> Tuple[int, ...]:
    """Saturated RGB colour within 20 degrees of the kind's hue."""
    hue = (_SHAPE_HUES[kind] + rng.uniform(-20, 20)) % 360
    rgb = colorsys.hsv_to_rgb(hue / 360, rng.uniform(0.6, 1.0),
                              rng.uniform(0.55, 1.0))
    return tuple(int(round(c * 255)) for c in rgb)


def _empty_coco() -> dict:
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    return dict(info=dict(description='mmswin toy shapes'), licenses=[],
                images=[], annotations=[], categories=categories)


def _annotation(ann_id: int, image_id: int, label: int,
                polygon: Polygon) -> dict:
    """COCO annotation: category ids start at 1, bbox is [x, y, w, h]."""
    x0, y0, x1, y1 = _bounds(polygon)
    xs, ys = np.array(polygon).T
    area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
    return dict(id=ann_id, image_id=image_id, category_id=label + 1,
                segmentation=[[c for point in polygon for c in point]],
                area=round(float(area), 2),
                bbox=[x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                iscrowd=0)
