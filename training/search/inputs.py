# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
What a search accepts, checked before the model runs, the same in the Python API, `eclip-search` and the search page.
Every refusal is a `QueryError` (a `ValueError`) whose message is one line a person can act on.

- Text: at least one non-blank character and at most `MAX_QUERY_CHARS` (1,000). A shopper's query is a few words;
  the text tower reads at most its position limit (128 tokens for the fashion model, about 500 characters of titles),
  so past 1,000 characters the rest would be cut off silently, and on a shared server a bound on the input is a bound
  on the work one request can ask for.
- Images: files or uploads that decode (`not an image`, `truncated` otherwise), at most `MAX_IMAGE_BYTES` (40 MB) and
  at most Pillow's own decompression-bomb limit of pixels (`PIL.Image.MAX_IMAGE_PIXELS`, 89.5 megapixels by
  default), read from the header before anything is decoded. Large photos are downscaled, not refused: the model
  sees 168-224 pixels, so a 50-megapixel phone photo is decoded at reduced scale (a JPEG's DCT scaling through
  `Image.draft`: an eighth of the memory and time) and shrunk to `MAX_IMAGE_SIDE` (2,048) pixels on its longer side.
"""

from __future__ import annotations

import io
import os
import warnings

MAX_QUERY_CHARS = 1000
MAX_IMAGE_BYTES = 40 * 1024 * 1024
MAX_IMAGE_SIDE = 2048


class QueryError(ValueError):
    """A query the search cannot answer (empty or too long text, an image that does not decode, is too large or
    missing, an unknown filter): shown as one line; the page shows it and the server keeps serving."""


def max_image_pixels() -> int:
    """Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`), the most pixels a query image may have."""
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS or 89_478_485)


def check_text_query(query) -> str:
    """`query` stripped, or a `QueryError`: not a string, blank, or longer than `MAX_QUERY_CHARS`."""
    if not isinstance(query, str):
        raise QueryError(f"a text query must be a string, got {type(query).__name__}.")
    text = query.strip()
    if not text:
        raise QueryError("the text query is empty: type a few words describing the product.")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the text query has {len(text):,} characters; at most {MAX_QUERY_CHARS:,} are accepted "
                         "(the model reads only the first few hundred).")
    return text


def read_query_image(source, name: str | None = None):
    """
    A query image as an RGB PIL image at most `MAX_IMAGE_SIDE` pixels on its longer side (EXIF orientation applied).

    Args:
        source: a file path, the file's bytes (an upload) or a PIL image.
        name: what to call the image in messages (an upload's file name); default the path.

    Raises:
        QueryError: no such file, a folder, an empty or oversized file, not an image, truncated, or more pixels than
            Pillow's decompression-bomb limit.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, Image.Image):
        image = source
        label = name or "the image"
        _check_pixels(image.size, label)
        return _shrink(image.convert("RGB"))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), name or "the uploaded file"
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        label = name or path
        if not os.path.exists(path):
            raise QueryError(f"{label}: no such file.")
        if os.path.isdir(path):
            raise QueryError(f"{label} is a folder, not an image.")
        size = os.path.getsize(path)
        if size > MAX_IMAGE_BYTES:
            raise QueryError(f"{label} is {size / 2**20:.0f} MB; images of at most {MAX_IMAGE_BYTES // 2**20} MB "
                             "are accepted.")
        with open(path, "rb") as handle:
            data = handle.read()
    else:
        raise QueryError(f"a query image must be a file path, bytes or a PIL image, got {type(source).__name__}.")
    if not data:
        raise QueryError(f"{label} is empty (0 bytes).")
    if len(data) > MAX_IMAGE_BYTES:
        raise QueryError(f"{label} is {len(data) / 2**20:.0f} MB; images of at most {MAX_IMAGE_BYTES // 2**20} MB "
                         "are accepted.")
    try:
        with warnings.catch_warnings():
            # Between Pillow's limit and twice it Pillow only warns; _check_pixels refuses those images itself.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                _check_pixels(opened.size, label)
                # JPEG: decode at the smallest DCT scale still at least MAX_IMAGE_SIDE (a no-op for other formats).
                opened.draft("RGB", (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
                opened.load()
                image = ImageOps.exif_transpose(opened)
                image = image.convert("RGB") if image.mode != "RGBA" else _on_white(image)
    except QueryError:
        raise
    except UnidentifiedImageError:
        raise QueryError(f"{label} is not an image (JPEG, PNG, WebP, GIF, BMP or TIFF).") from None
    except Image.DecompressionBombError:
        raise QueryError(f"{label} has more pixels than the {max_image_pixels() / 1e6:.1f} megapixels accepted "
                         "(Pillow's decompression-bomb limit).") from None
    except (OSError, SyntaxError, ValueError) as error:
        words = " ".join(str(error).split())
        reason = "it is truncated" if "truncat" in words.lower() else f"it cannot be decoded ({words})"
        raise QueryError(f"{label} is not a usable image: {reason}.") from None
    if image.width < 1 or image.height < 1:
        raise QueryError(f"{label} is empty ({image.width}x{image.height} pixels).")
    return _shrink(image)


def _check_pixels(size: tuple[int, int], label: str) -> None:
    width, height = size
    limit = max_image_pixels()
    if width * height > limit:
        raise QueryError(f"{label} is {width}x{height} ({width * height / 1e6:.1f} megapixels), more than the "
                         f"{limit / 1e6:.1f} megapixels accepted (Pillow's decompression-bomb limit); "
                         "downscale it first.")


def _on_white(image):
    """Transparency composited onto white, the convention of product photos (as the training data loader does)."""
    from PIL import Image

    canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, image.convert("RGBA")).convert("RGB")


def _shrink(image):
    if max(image.size) > MAX_IMAGE_SIDE:
        from PIL import Image

        image = image.copy()
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.BICUBIC)
    return image


def parse_filters(values) -> dict[str, list[str]]:
    """
    `--filter field=value` strings (or a mapping) as `{field: [values]}`: fields are ANDed, several values of one
    field ORed (`gender=Women --filter gender=Unisex`). A string may hold several, comma-separated.
    """
    if not values:
        return {}
    if isinstance(values, dict):
        return {str(k): [str(v) for v in (vs if isinstance(vs, (list, tuple)) else [vs])] for k, vs in values.items()}
    out: dict[str, list[str]] = {}
    for value in values:
        for part in str(value).split(","):
            if not part.strip():
                continue
            field, separator, wanted = part.partition("=")
            if not separator or not field.strip() or not wanted.strip():
                raise QueryError(f"filter {part.strip()!r} must read FIELD=VALUE, e.g. gender=Women.")
            out.setdefault(field.strip(), []).append(wanted.strip())
    return out


__all__ = ["MAX_IMAGE_BYTES", "MAX_IMAGE_SIDE", "MAX_QUERY_CHARS", "QueryError", "check_text_query",
           "max_image_pixels", "parse_filters", "read_query_image"]
