"""Scenes of the testbed world: a few flat shapes on a 3x3 grid, rendered exactly and read back from pixels.

The world is made to be easy to see for a tiny vision-language model and exact to check on a CPU:

- a 128x128 canvas split into a 3x3 grid (every cell has a plain English name: "top left", "center", ...);
- at most one shape per cell: a circle, square, triangle or diamond, small or large, in one of six saturated colours
  (red, orange, yellow, green, blue, purple) on a white, gray or black background;
- no anti-aliasing, so :func:`render` is deterministic and :func:`read_scene` recovers a rendered scene exactly. It
  classifies pixels by their nearest palette colour and matches each cell against the eight shape templates, so
  it also reads images with pixel noise or a resize.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Iterable

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 128
GRID = 3
SHAPES = ("circle", "square", "triangle", "diamond")
COLORS = {
    "red": (220, 20, 20),
    "orange": (255, 140, 0),
    "yellow": (250, 220, 0),
    "green": (20, 160, 40),
    "blue": (20, 60, 220),
    "purple": (140, 30, 180),
}
BACKGROUNDS = {"white": (255, 255, 255), "gray": (128, 128, 128), "black": (0, 0, 0)}
SIZES = {"small": 9, "large": 16}  # half-extent in pixels; cells are 42-43 pixels wide
CELLS = tuple((r, c) for r in range(GRID) for c in range(GRID))
Cell = tuple[int, int]

_PALETTE_NAMES = tuple(COLORS) + tuple(BACKGROUNDS)
_PALETTE = np.array([*COLORS.values(), *BACKGROUNDS.values()], dtype=np.float32)
_MIN_SHAPE_PIXELS = 30
_OFF_PALETTE_DISTANCE = 80.0
_MAX_OFF_PALETTE_FRACTION = 0.2


class SceneReadError(ValueError):
    """An image that is not a testbed scene (no known background, mostly colours outside the palette)."""


@dataclass(frozen=True)
class Shape:
    """One shape: its kind, colour, size and grid cell ``(row, column)``, row 0 at the top."""

    kind: str
    color: str
    size: str
    cell: Cell

    def __post_init__(self) -> None:
        object.__setattr__(self, "cell", tuple(self.cell))
        if self.kind not in SHAPES:
            raise ValueError(f"unknown shape '{self.kind}'; choose one of {', '.join(SHAPES)}")
        if self.color not in COLORS:
            raise ValueError(f"unknown shape colour '{self.color}'; choose one of {', '.join(COLORS)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size '{self.size}'; choose one of {', '.join(SIZES)}")
        if self.cell not in CELLS:
            raise ValueError(f"cell {self.cell} is outside the {GRID}x{GRID} grid")

    def replace(self, **changes: Any) -> "Shape":
        return Shape(**{**asdict(self), **changes})


@dataclass(frozen=True)
class Scene:
    """A background colour and shapes in distinct cells, kept in reading order (so equal scenes compare equal)."""

    background: str = "white"
    shapes: tuple[Shape, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background '{self.background}'; choose one of {', '.join(BACKGROUNDS)}")
        shapes = tuple(sorted(self.shapes, key=lambda s: s.cell))
        cells = [s.cell for s in shapes]
        if len(set(cells)) != len(cells):
            raise ValueError("two shapes share a cell; a cell holds at most one shape")
        object.__setattr__(self, "shapes", shapes)

    def at(self, cell: Cell) -> Shape | None:
        return next((s for s in self.shapes if s.cell == tuple(cell)), None)

    @property
    def free_cells(self) -> list[Cell]:
        used = {s.cell for s in self.shapes}
        return [c for c in CELLS if c not in used]

    def without(self, cell: Cell) -> "Scene":
        return Scene(self.background, tuple(s for s in self.shapes if s.cell != tuple(cell)))

    def with_shape(self, shape: Shape) -> "Scene":
        """This scene with ``shape`` put in its cell (replacing what was there)."""
        return Scene(self.background, self.without(shape.cell).shapes + (shape,))

    def with_background(self, color: str) -> "Scene":
        return Scene(color, self.shapes)

    def to_dict(self) -> dict[str, Any]:
        return {"background": self.background, "shapes": [asdict(s) for s in self.shapes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scene":
        return cls(data["background"], tuple(Shape(**s) for s in data["shapes"]))


def _bounds(index: int) -> tuple[int, int]:
    return index * CANVAS // GRID, (index + 1) * CANVAS // GRID


def _outline(kind: str, size: str, cell: Cell) -> tuple[str, list[tuple[int, int]]]:
    """The drawing primitive and its points for one shape."""
    (r0, r1), (c0, c1) = _bounds(cell[0]), _bounds(cell[1])
    cx, cy, h = (c0 + c1) // 2, (r0 + r1) // 2, SIZES[size]
    if kind == "circle":
        return "ellipse", [(cx - h, cy - h), (cx + h, cy + h)]
    if kind == "square":
        return "rectangle", [(cx - h, cy - h), (cx + h, cy + h)]
    if kind == "triangle":
        return "polygon", [(cx, cy - h), (cx - h, cy + h), (cx + h, cy + h)]
    return "polygon", [(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]


def _draw(draw: ImageDraw.ImageDraw, kind: str, size: str, cell: Cell, fill: Any) -> None:
    primitive, points = _outline(kind, size, cell)
    getattr(draw, primitive)(points, fill=fill)


def render(scene: Scene) -> Image.Image:
    """The 128x128 RGB image of ``scene`` (deterministic, no anti-aliasing)."""
    img = Image.new("RGB", (CANVAS, CANVAS), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for s in scene.shapes:
        _draw(draw, s.kind, s.size, s.cell, COLORS[s.color])
    return img


@lru_cache(maxsize=None)
def _templates(cell: Cell) -> list[tuple[str, str, np.ndarray]]:
    """Masks of every (shape, size) drawn in ``cell``, cropped to the cell."""
    (r0, r1), (c0, c1) = _bounds(cell[0]), _bounds(cell[1])
    out = []
    for kind in SHAPES:
        for size in SIZES:
            mask = Image.new("L", (CANVAS, CANVAS), 0)
            _draw(ImageDraw.Draw(mask), kind, size, cell, 255)
            out.append((kind, size, np.asarray(mask)[r0:r1, c0:c1] > 0))
    return out


def _labels(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel index of the nearest palette colour, and the distance to it."""
    arr = np.asarray(img, dtype=np.int64)
    packed = (arr[:, :, 0] << 16) | (arr[:, :, 1] << 8) | arr[:, :, 2]
    colors, inverse = np.unique(packed, return_inverse=True)  # clean renders have a handful of distinct colours
    rgb = np.stack([colors >> 16, (colors >> 8) & 255, colors & 255], axis=-1).astype(np.float32)
    dist = np.linalg.norm(rgb[:, None, :] - _PALETTE[None, :, :], axis=-1)
    inverse = inverse.reshape(packed.shape)
    return dist.argmin(axis=-1)[inverse], dist.min(axis=-1)[inverse]


def read_scene(image: Image.Image) -> Scene:
    """Recover the scene shown in ``image`` from its pixels.

    Exact for images made by :func:`render`; robust to pixel noise and to resizing (the image is brought back to
    128x128). Raises :class:`SceneReadError` for images that are not testbed scenes.
    """
    img = image.convert("RGB")
    if img.size != (CANVAS, CANVAS):
        img = img.resize((CANVAS, CANVAS), Image.NEAREST)
    labels, dist = _labels(img)
    if float((dist > _OFF_PALETTE_DISTANCE).mean()) > _MAX_OFF_PALETTE_FRACTION:
        raise SceneReadError("the image is not a testbed scene: most of its colours are outside the palette")
    n_colors = len(COLORS)
    ring = np.zeros(labels.shape, dtype=bool)
    for i in range(GRID):  # cell borders never hold a shape
        lo, hi = _bounds(i)
        ring[lo:lo + 2, :] = ring[hi - 2:hi, :] = ring[:, lo:lo + 2] = ring[:, hi - 2:hi] = True
    counts = np.bincount(labels[ring], minlength=len(_PALETTE_NAMES))
    background = int(counts.argmax())
    if background < n_colors:
        raise SceneReadError("the image is not a testbed scene: its background is not white, gray or black")
    shapes = []
    for cell in CELLS:
        (r0, r1), (c0, c1) = _bounds(cell[0]), _bounds(cell[1])
        patch = labels[r0:r1, c0:c1]
        mask = patch < n_colors
        if int(mask.sum()) < _MIN_SHAPE_PIXELS:
            continue
        color = _PALETTE_NAMES[int(np.bincount(patch[mask], minlength=n_colors).argmax())]

        def iou(template: np.ndarray) -> float:
            return float((template & mask).sum()) / float((template | mask).sum())

        kind, size, _ = max(_templates(cell), key=lambda t: iou(t[2]))
        shapes.append(Shape(kind, color, size, cell))
    return Scene(_PALETTE_NAMES[background], tuple(shapes))


def render_residual(image: Image.Image, scene: Scene) -> float:
    """Root-mean-square difference (0-255 scale) between ``image`` and the clean render of ``scene``."""
    img = image.convert("RGB")
    if img.size != (CANVAS, CANVAS):
        img = img.resize((CANVAS, CANVAS), Image.NEAREST)
    diff = np.asarray(img, dtype=np.float32) - np.asarray(render(scene), dtype=np.float32)
    return float(np.sqrt((diff**2).mean()))


def add_noise(image: Image.Image, std: float, seed: int | None) -> Image.Image:
    """``image`` with Gaussian pixel noise of standard deviation ``std`` (0-255 scale)."""
    arr = np.asarray(image, dtype=np.float32)
    arr = arr + np.random.default_rng(seed).normal(0.0, std, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


def random_scene(rng: random.Random, n_shapes: int | tuple[int, int] = (2, 5),
                 backgrounds: Iterable[str] = tuple(BACKGROUNDS)) -> Scene:
    """A random scene with ``n_shapes`` shapes (an int, or an inclusive range) in distinct cells."""
    n = n_shapes if isinstance(n_shapes, int) else rng.randint(*n_shapes)
    cells = rng.sample(CELLS, n)
    shapes = tuple(Shape(rng.choice(SHAPES), rng.choice(tuple(COLORS)), rng.choice(tuple(SIZES)), c) for c in cells)
    return Scene(rng.choice(tuple(backgrounds)), shapes)
