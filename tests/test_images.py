"""The bad-input corpus: every odd or broken input gives a one-line error or is handled correctly."""

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from mira.images import MAX_INSTRUCTION_CHARS, InputError, load_image, validate_instruction, working_size


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def forged_png(width: int, height: int) -> bytes:
    """A valid small PNG whose header claims width x height (a decompression bomb as far as headers go)."""
    data = bytearray(png_bytes(Image.new("L", (8, 8))))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


@pytest.fixture
def corpus(tmp_path):
    def write(name, data):
        p = tmp_path / name
        p.write_bytes(data)
        return p

    jpg = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(jpg, format="JPEG")
    cmyk = io.BytesIO()
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(cmyk, format="JPEG")
    exif_img = Image.new("RGB", (60, 20), "blue")
    exif = exif_img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    rotated = io.BytesIO()
    exif_img.save(rotated, format="JPEG", exif=exif)
    gif = io.BytesIO()
    frames = [Image.new("P", (32, 32), i) for i in range(3)]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    palette = Image.new("P", (32, 32))
    palette.putpalette([0, 255, 0] * 256)
    sixteen = Image.fromarray((np.ones((20, 30)) * 65535).astype(np.uint16))
    return {
        "empty": write("empty.png", b""),
        "truncated_png": write("trunc.png", png_bytes(Image.effect_noise((64, 64), 50))[:200]),
        "truncated_jpeg": write("trunc.jpg", jpg.getvalue()[: len(jpg.getvalue()) // 2]),
        "text": write("notes.png", b"this is not an image\n"),
        "bomb": write("bomb.png", forged_png(20000, 10000)),
        "cmyk": write("cmyk.jpg", cmyk.getvalue()),
        "sixteen": write("16bit.png", png_bytes(sixteen)),
        "palette": write("palette.png", png_bytes(palette)),
        "rgba": write("rgba.png", png_bytes(rgba)),
        "exif": write("rotated.jpg", rotated.getvalue()),
        "tiny": write("1x1.png", png_bytes(Image.new("RGB", (1, 1)))),
        "sliver": write("sliver.png", png_bytes(Image.new("RGB", (10000, 10)))),
        "gif": write("anim.gif", gif.getvalue()),
        "dir": tmp_path,
        "missing": tmp_path / "nope.png",
    }


ERRORS = {
    "empty": "empty (0 bytes)",
    "truncated_png": "damaged or truncated",
    "truncated_jpeg": "damaged or truncated",
    "text": "not an image",
    "bomb": "megapixel",
    "tiny": "at least",
    "sliver": "aspect ratio",
    "dir": "is a folder",
    "missing": "does not exist",
}


@pytest.mark.parametrize("key", sorted(ERRORS))
def test_bad_images_give_one_line_errors(corpus, key):
    with pytest.raises(InputError) as info:
        load_image(corpus[key])
    message = str(info.value)
    assert ERRORS[key] in message and "\n" not in message


def test_bad_bytes_too():
    with pytest.raises(InputError, match="uploaded image"):
        load_image(b"\x89PNG garbage")


def test_cmyk_becomes_rgb(corpus):
    img = load_image(corpus["cmyk"])
    assert img.mode == "RGB" and img.size == (40, 30)
    r, g, b = img.getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_is_scaled_not_clipped(corpus):
    img = load_image(corpus["sixteen"])
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)


def test_palette_and_alpha(corpus):
    assert load_image(corpus["palette"]).getpixel((0, 0)) == (0, 255, 0)
    assert load_image(corpus["rgba"]).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white background


def test_exif_orientation_applied(corpus):
    assert load_image(corpus["exif"]).size == (20, 60)


def test_animated_gif_uses_first_frame(corpus):
    img = load_image(corpus["gif"])
    assert img.mode == "RGB" and img.size == (32, 32)


def test_pil_input_is_copied_not_mutated():
    src = Image.new("RGB", (16, 16))
    out = load_image(src)
    assert out is not src and out.tobytes() == src.tobytes()


@pytest.mark.parametrize(
    "text,fragment",
    [("", "empty"), ("   \n\t", "empty"), ("x" * 100_000, "limit"), (b"\xff\xfe bad", "UTF-8"),
     ("bad \udcff surrogate", "UTF-8"), (42, "must be text")],
)
def test_bad_instructions(text, fragment):
    with pytest.raises(InputError, match=fragment):
        validate_instruction(text)


def test_instruction_cleaned():
    assert validate_instruction("  make\n the sky\tblue \x00 ") == "make the sky blue"
    assert len(validate_instruction("a" * MAX_INSTRUCTION_CHARS)) == MAX_INSTRUCTION_CHARS


def test_working_size_keeps_aspect():
    assert working_size((2048, 1024), 1024 * 1024) == (1440, 720)
    assert working_size((100, 50), 1024 * 1024) == (96, 48)
    w, h = working_size((1000, 1500), 512 * 512)
    assert w % 16 == 0 and h % 16 == 0 and abs(w / h - 1000 / 1500) < 0.05


@pytest.mark.parametrize("key", ["empty", "truncated_jpeg", "text", "bomb", "sliver", "missing"])
def test_cli_bad_image_exits_with_message(corpus, key):
    proc = subprocess.run(
        [sys.executable, "-m", "mira.cli", "edit", str(corpus[key]), "make it blue", "--policy", "passthrough"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("instruction", ["", "x" * 100_000])
def test_cli_bad_instruction_exits_with_message(corpus, instruction):
    proc = subprocess.run(
        [sys.executable, "-m", "mira.cli", "edit", str(corpus["palette"]), instruction, "--policy", "passthrough"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "instruction" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_non_utf8_instruction(corpus):
    proc = subprocess.run(
        [sys.executable.encode(), b"-m", b"mira.cli", b"edit", str(corpus["palette"]).encode(), b"\xff\xfe bad",
         b"--policy", b"passthrough"],
        capture_output=True, timeout=60,
    )
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and "UTF-8" in err and "Traceback" not in err
