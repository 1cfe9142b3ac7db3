"""A tiny ADE20K-format segmentation dataset, drawn from a seed.

Layout (what mmseg's ADE20K pipelines read)::

    root/images/training/0000.jpg       RGB image, size x size
    root/annotations/training/0000.png  uint8 label map
    root/images/validation/...          same for the validation split
    root/annotations/validation/...

Label maps follow ADE20K: ``0`` means "not labelled" and becomes the ignore
index 255 under ``reduce_zero_label=True``, which turns ``k >= 1`` into
class ``k - 1``. Each image shows a textured background with 1-4 filled
shapes (square, disc, triangle); every shape carries a 1-pixel unlabelled
outline, as real annotations leave object boundaries unlabelled. Each shape
kind has its own hue band (with jitter), so a small network learns the task
in minutes on a CPU while still having to get the shapes' extents right.
"""
import os
import os.path as osp
from typing import Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw

# Class names after reduce_zero_label; PNG value = index + 1.
CLASSES: Tuple[str, ...] = ('background', 'square', 'disc', 'triangle')
# Colours used for visualising predictions (one RGB triple per class).
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (40, 40, 40), (230, 60, 60), (60, 200, 60), (70, 110, 240))
# Centre hue (degrees) of each shape kind's colours; 120 degrees apart so
# PhotoMetricDistortion's hue shift (at most +-36 degrees) keeps them apart.
_SHAPE_HUES: Dict[str, float] = {'square': 0., 'disc': 120.,
                                 'triangle': 240.}
IGNORE_VALUE = 0  # PNG value of unlabelled pixels (ADE20K convention)
SPLITS: Dict[str, int] = {'training': 160, 'validation': 40}


def make_ade_toy(root: str, seed: int = 0, *, size: int = 128,
                 num_train: int = SPLITS['training'],
                 num_val: int = SPLITS['validation']) -> None:
    """Write the toy dataset under ``root`` (overwriting files of the same
    name). The same ``seed`` always produces the same files.

    Args:
        root: Output folder; gets ``images/`` and ``annotations/``.
        seed: Seed of the random generator.
        size: Side of the square images in pixels (at least 32).
        num_train: Number of training images.
        num_val: Number of validation images.
    """
    if not isinstance(root, str) or not root:
        raise ValueError(f'root must be a non-empty path, got {root!r}')
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f'seed must be an int >= 0, got {seed!r}')
    if size < 32:
        raise ValueError(f'size must be >= 32 pixels, got {size}; smaller '
                         'images leave no room for the shapes')
    for name, count in (('num_train', num_train), ('num_val', num_val)):
        if count < 1:
            raise ValueError(f'{name} must be >= 1, got {count}')
    rng = np.random.default_rng(seed)
    for split, count in (('training', num_train), ('validation', num_val)):
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for index in range(count):
            image, label = draw_sample(rng, size)
            stem = f'{index:04d}'
            Image.fromarray(image).save(
                osp.join(img_dir, stem + '.jpg'), quality=95)
            Image.fromarray(label).save(osp.join(ann_dir, stem + '.png'))


def draw_sample(rng: np.random.Generator,
                size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one image and its ADE20K-style label map.

    Returns:
        ``(image, label)``: uint8 arrays of shapes ``(size, size, 3)`` and
        ``(size, size)``; label values are ``0`` (unlabelled) or
        ``1 + CLASSES.index(name)``.
    """
    image = _background(rng, size)
    label = np.full((size, size), 1 + CLASSES.index('background'), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        kind = CLASSES[int(rng.integers(1, len(CLASSES)))]
        mask, outline = _shape_masks(rng, kind, size)
        image[mask | outline] = _shape_colour(rng, kind)
        label[mask] = 1 + CLASSES.index(kind)
        label[outline] = IGNORE_VALUE
    noise = rng.normal(0, 6, image.shape)
    image = np.clip(image.astype(np.float64) + noise, 0, 255)
    return image.astype(np.uint8), label


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-saturation linear gradient between two random grey-ish colours."""
    start, end = (rng.uniform(60, 190) + rng.uniform(-15, 15, 3)
                  for _ in range(2))
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1)
    ramp = (np.cos(angle) * xs + np.sin(angle) * ys)
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
    image = start + (end - start) * ramp[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def _shape_masks(rng: np.random.Generator, kind: str,
                 size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Filled mask and 1-pixel outline of a random shape of ``kind``."""
    side = rng.uniform(0.2, 0.4) * size
    cx, cy = rng.uniform(side / 2, size - side / 2, 2)
    half = side / 2
    canvas = Image.new('L', (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == 'square':
        points = _rotate([(-half, -half), (half, -half), (half, half),
                          (-half, half)], rng.uniform(0, np.pi / 2), cx, cy)
        draw.polygon(points, fill=1, outline=2)
    elif kind == 'disc':
        draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=1,
                     outline=2)
    elif kind == 'triangle':
        # circumradius 1.5 x half: about the area of the disc
        radius = 1.5 * half
        corners = [(radius * np.cos(a), radius * np.sin(a))
                   for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
        points = _rotate(corners, rng.uniform(0, 2 * np.pi / 3), cx, cy)
        draw.polygon(points, fill=1, outline=2)
    else:
        raise ValueError(f'unknown shape {kind!r}; expected one of '
                         f'{CLASSES[1:]}')
    drawn = np.asarray(canvas)
    return drawn == 1, drawn == 2


def _rotate(points, angle: float, cx: float, cy: float):
    cos, sin = np.cos(angle), np.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos)
            for x, y in points]


def _shape_colour(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Saturated RGB colour whose hue lies within 20 degrees of the
    kind's hue band."""
    hue = (_SHAPE_HUES[kind] + rng.uniform(-20, 20)) % 360
    sat, val = rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0)
    return np.array(_hsv_to_rgb(hue, sat, val)) * 255


def _hsv_to_rgb(hue: float, sat: float,
                val: float) -> Tuple[float, float, float]:
    chroma = val * sat
    x = chroma * (1 - abs((hue / 60) % 2 - 1))
    sector = int(hue // 60) % 6
    r, g, b = [(chroma, x, 0), (x, chroma, 0), (0, chroma, x),
               (0, x, chroma), (x, 0, chroma), (chroma, 0, x)][sector]
    m = val - chroma
    return r + m, g + m, b + m
