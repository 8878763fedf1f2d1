"""The one place where user images and instructions enter MIRA.

Every entry point (CLI, Python API, HTTP server, data builder) calls :func:`load_image` and
:func:`validate_instruction`; each failure is an :class:`InputError` whose message says what was wrong and what to
do, in one line.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import Union

from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, bytes, "Image.Image"]

MAX_INPUT_PIXELS = 64_000_000
MIN_SIDE = 8
MAX_ASPECT = 20.0
MAX_INSTRUCTION_CHARS = 2000


class InputError(ValueError):
    """A user input that MIRA cannot use; the message is meant to be shown as is."""


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    if isinstance(source, bytes):
        return f"uploaded image ({len(source)} bytes)"
    return "image"


def _open(source: ImageSource) -> Image.Image:
    name = _describe(source)
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"{name} does not exist; check the path")
        if path.is_dir():
            raise InputError(f"{name} is a folder; give the path of an image file")
        data = path.read_bytes()
    elif isinstance(source, bytes):
        data = source
    else:
        raise InputError(f"expected an image path, bytes or a PIL image, got {type(source).__name__}")
    if not data:
        raise InputError(f"{name} is empty (0 bytes); give a PNG, JPEG or WebP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_pixels(img.size, name)
            img.load()
    except Image.DecompressionBombError as exc:
        raise InputError(f"{name} is too large to decode safely ({exc}); resize it below 64 megapixels") from None
    except Image.DecompressionBombWarning:
        raise InputError(f"{name} is too large to decode safely; resize it below 64 megapixels") from None
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image PIL can read; give a PNG, JPEG or WebP file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name} is damaged or truncated ({exc}); re-export the image and try again") from None
    return img


def _check_pixels(size: tuple[int, int], name: str) -> None:
    w, h = size
    if w * h > MAX_INPUT_PIXELS:
        raise InputError(
            f"{name} is {w}x{h} ({w * h / 1e6:.0f} megapixels), over the {MAX_INPUT_PIXELS // 1_000_000} megapixel "
            "limit; resize it first"
        )
    if min(w, h) < MIN_SIDE:
        raise InputError(f"{name} is {w}x{h}; each side must be at least {MIN_SIDE} pixels")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise InputError(
            f"{name} is {w}x{h}, an aspect ratio over {MAX_ASPECT:.0f}:1 that editors cannot handle; crop it first"
        )


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy of any PIL image: EXIF orientation applied, alpha composited on white, 16-bit and CMYK converted."""
    if getattr(img, "is_animated", False):
        img.seek(0)
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = img.point(lambda v: v * (1 / 256)) if img.mode != "I" else img
        img = arr.convert("L")
    elif img.mode == "F":
        img = img.convert("L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img.copy()


def load_image(source: ImageSource) -> Image.Image:
    """Load a user image from a path, bytes or a PIL image, validated and converted to RGB.

    Raises :class:`InputError` with a one-line explanation for missing, empty, non-image, truncated, oversized,
    tiny or extremely elongated inputs. Animated images use their first frame.
    """
    img = _open(source)
    _check_pixels(img.size, _describe(source))
    return to_rgb(img)


def validate_instruction(text: object) -> str:
    """A cleaned instruction, or :class:`InputError` if it is empty, too long or not valid text."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("the instruction is not valid UTF-8 text; re-type it or save it as UTF-8") from None
    if not isinstance(text, str):
        raise InputError(f"the instruction must be text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("the instruction is not valid UTF-8 text; re-type it or save it as UTF-8") from None
    text = " ".join(text.replace("\x00", " ").split())
    if not text:
        raise InputError("the instruction is empty; say what should change in the image")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InputError(
            f"the instruction has {len(text)} characters, over the {MAX_INSTRUCTION_CHARS} limit; shorten it"
        )
    return text


def working_size(size: tuple[int, int], max_pixels: int, multiple: int = 16) -> tuple[int, int]:
    """(width, height) close to ``max_pixels`` in area that keeps the aspect ratio, both multiples of ``multiple``.

    Images smaller than ``max_pixels`` keep their size (rounded down to the multiple); larger ones are scaled down,
    never above ``max_pixels``.
    """
    w, h = size
    scale = min(1.0, math.sqrt(max_pixels / (w * h)))
    new_w = max(multiple, int(w * scale // multiple) * multiple)
    new_h = max(multiple, int(h * scale // multiple) * multiple)
    return new_w, new_h
