"""Opening an image file, once for everyone: readers, scorers, the judge, the pages and the methods.

``Image.convert("RGB")`` is wrong for some modes: a 16-bit grayscale PNG (``I;16``) saturates to
white, a 32-bit one (``I``) too, float images (``F``) are truncated, and transparent pixels keep
whatever colour lies under them. :func:`to_rgb` converts every mode by its values' range, and
:func:`open_rgb` opens a file with one error type for every way a file can be unusable
(unreadable, truncated, not an image, a decompression bomb).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BenchError

# The colour transparent pixels are laid on: the white of a product photo's background.
BACKGROUND = (255, 255, 255)


def to_rgb(image: Image.Image, alpha: str = "white") -> Image.Image:
    """8-bit RGB with the picture's values kept:

    - 16-bit grayscale (``I;16``, ``I;16B``, ``I;16L``) and 32-bit integer (``I``: how 16-bit data
      is often held) scaled from 0-65535 to 0-255 (values above 65535 clipped);
    - float (``F``) from 0-1 when no value exceeds 1, else from 0-255, clipped;
    - transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) laid on white, or with
      ``alpha="drop"`` dropped as PIL's ``convert("RGB")`` drops it (a method whose authors open
      photos that way);
    - every other mode (``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ...) through PIL's own conversion.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if alpha == "drop":
        return image.convert("RGB")
    if mode == "P" and "transparency" in image.info or mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        canvas = Image.new("RGBA", image.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, image).convert("RGB")
    return image.convert("RGB")


@contextlib.contextmanager
def _read_errors(path, what: str):
    """Any way a file can be unusable, as one BenchError naming it."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise BenchError(f"cannot read {what}: too many pixels for a photo (a decompression bomb? {exc})",
                         path) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BenchError(f"cannot read {what} ({exc.__class__.__name__}: {exc})".replace(f" {str(path)!r}", ""),
                         path) from None


def open_rgb(path: str | Path | Image.Image, *, exif_transpose: bool = False, what: str = "image",
             alpha: str = "white") -> Image.Image:
    """The file as 8-bit RGB (:func:`to_rgb`, ``alpha`` as there), fully decoded; with
    ``exif_transpose`` turned upright by its EXIF orientation first. Any unusable file is a
    BenchError naming it. An image already open is converted as it is."""
    if isinstance(path, Image.Image):
        return to_rgb(ImageOps.exif_transpose(path) if exif_transpose else path, alpha)
    with _read_errors(path, what):
        with Image.open(path) as im:
            im.load()
            return to_rgb(ImageOps.exif_transpose(im) if exif_transpose else im, alpha)


def check_decodes(path: str | Path, what: str = "image") -> None:
    """Decode the whole file (a truncated one fails, whatever ``LOAD_TRUNCATED_IMAGES`` another
    library set), or a BenchError naming it."""
    from PIL import ImageFile

    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with _read_errors(path, what):
            with Image.open(path) as im:
                im.load()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
