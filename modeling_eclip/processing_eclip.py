# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""ECLIP processor (image processor + tokenizer) and the product-text builder."""

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from transformers.processing_utils import ProcessorMixin

DEFAULT_PRODUCT_TEXT_TEMPLATE = (
    "{brand} {title} | {category} | colour: {colour} | gender: {gender} | material: {material} | "
    "pattern: {pattern} | usage: {usage} | season: {season}"
)
CATEGORY_SEPARATOR = " > "
_FIELD = re.compile(r"{(\w+)}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"\s+")


def _field_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from pandas / CSV gaps
        return ""
    if isinstance(value, (list, tuple)):
        return CATEGORY_SEPARATOR.join(part for part in (_field_text(v) for v in value) if part)
    return _SPACES.sub(" ", _CONTROL.sub(" ", str(value))).strip()


def build_product_text(fields: Mapping, template: str = DEFAULT_PRODUCT_TEXT_TEMPLATE) -> str:
    """
    Turn raw product fields into one string by a template of `" | "`-separated segments.

    A segment whose fields are all missing or empty is dropped and missing fields inside a kept segment become
    empty, so a template never fails on a sparse record (no `KeyError`). List values (a category path) are joined
    with `" > "`; control characters and runs of whitespace collapse to one space.

    Example: `build_product_text({"title": "Slim Jeans", "category": ["Apparel", "Jeans"], "colour": "Blue"})`
    gives `"Slim Jeans | Apparel > Jeans | colour: Blue"`.
    """
    if not isinstance(fields, Mapping):
        raise TypeError(f"build_product_text expects a mapping of field name to value, got {type(fields).__name__}.")
    segments = []
    for segment in template.split(" | "):
        names = _FIELD.findall(segment)
        values = {name: _field_text(fields.get(name)) for name in names}
        if names and not any(values.values()):
            continue
        text = _FIELD.sub(lambda m: values[m.group(1)], segment)
        text = _SPACES.sub(" ", text).strip()
        if text:
            segments.append(text)
    return " | ".join(segments)


def _describe(index: int | None, source) -> str:
    name = source if isinstance(source, (str, os.PathLike)) else getattr(source, "filename", None)  # PIL keeps the path
    label = "image" if index is None else f"image {index}"
    return label + (f" ({os.fspath(name)})" if name else "")


def open_image(path: str | os.PathLike):
    """
    Open an image file completely (PIL decodes lazily, so a truncated file fails only when the pixels are first
    used, deep in an image processor, with no file name), apply its EXIF orientation as `transformers.image_utils.
    load_image` does, and return it as RGB. A file that cannot be read raises `ValueError` naming it. Use it to give
    the pipelines, and any other consumer, images that are known to decode.
    """
    from PIL import Image, ImageOps

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{_describe(None, path)}: file not found.")
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{_describe(None, path)} cannot be decoded: {error}") from error


def to_rgb_image(image, index: int = 0):
    """
    Bring one image into a form the image processor converts correctly: a PIL image in an 8-bit mode, or an
    (H, W, 3) / (3, H, W) array. 16-bit and float PIL modes are rescaled (a plain `convert("RGB")` clips them);
    transparency is later composited onto white by the image processor. Raises `ValueError` naming the image.
    """
    from PIL import Image, UnidentifiedImageError

    source = image
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"{_describe(index, source)}: file not found.")
        try:
            image = Image.open(image)
            image.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
            raise ValueError(f"{_describe(index, source)} cannot be decoded: {error}") from error
    if isinstance(image, Image.Image):
        try:
            image.load()  # a lazily opened file decodes here, where the error can still name it
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"{_describe(index, image)} cannot be decoded: {error}") from error
        if image.width < 1 or image.height < 1:
            raise ValueError(f"{_describe(index, source)} is empty ({image.width}x{image.height}).")
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            array = np.asarray(image, dtype=np.float64)
            low, high = float(array.min()), float(array.max())
            scale = 255.0 / (high - low) if high > low else 0.0
            image = Image.fromarray(((array - low) * scale).astype(np.uint8), mode="L")
        elif image.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB")
        return image
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.size == 0:
            raise ValueError(
                f"{_describe(index, source)} must be an (H, W), (H, W, C) or (C, H, W) array, got shape {image.shape}."
            )
        if not np.isfinite(image).all():
            raise ValueError(f"{_describe(index, source)} contains NaN or infinite values.")
        channels_first = image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4)
        if channels_first:
            image = np.moveaxis(image, 0, -1)
        if image.shape[-1] not in (1, 3, 4):
            raise ValueError(f"{_describe(index, source)} has {image.shape[-1]} channels; expected 1, 3 or 4.")
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        return image
    raise TypeError(
        f"{_describe(index, source)} has unsupported type {type(source).__name__}: pass a PIL image, a numpy array, "
        "a torch tensor or a file path."
    )


def _as_list(images) -> list:
    """One image, a list of images or a 4-D array / tensor (a batch) as a list."""
    single = not isinstance(images, (list, tuple)) and not (
        isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4
    )
    return [images] if single else list(images)


class EclipProcessor(ProcessorMixin):
    r"""
    Wraps an image processor and a tokenizer into one processor (as `CLIPProcessor` does) and adds the
    product-text builder.

    Args:
        image_processor: any transformers image processor (e.g. `CLIPImageProcessorPil`).
        tokenizer: any transformers tokenizer.
        product_text_template (`str`, *optional*): template of [`build_product_text`].

    Texts are padded and truncated by default, so an over-long title never overflows the text tower.
    """

    text_kwargs = {"padding": True, "truncation": True}

    def __init__(self, image_processor=None, tokenizer=None, product_text_template: str | None = None, **kwargs):
        self.product_text_template = product_text_template or DEFAULT_PRODUCT_TEXT_TEMPLATE
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_vision_text_pretrained(
        cls, vision_model_name_or_path: str, text_model_name_or_path: str, image_size: int | None = None, **kwargs
    ) -> "EclipProcessor":
        """
        The processor of an ECLIP model built with `EclipModel.from_vision_text_pretrained`: the vision tower's own
        image processor (its normalisation) and the text tower's tokenizer. `image_size` resizes the shortest edge
        to it and crops a square of that side (a multiple of the tower's patch size, for ViTs).
        """
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        image_kwargs = {}
        if image_size is not None:
            config = AutoConfig.from_pretrained(vision_model_name_or_path)
            config = getattr(config, "vision_config", None) or config
            patch = getattr(config, "patch_size", None)
            if not isinstance(image_size, int) or image_size < 1 or (patch and image_size % patch):
                raise ValueError(
                    f"image_size must be a positive multiple of the vision tower's {patch}-pixel patch, got "
                    f"{image_size!r}." if patch else f"image_size must be a positive integer, got {image_size!r}."
                )
            image_kwargs = {"size": {"shortest_edge": image_size}, "crop_size": {"height": image_size, "width": image_size}}
        image_processor = AutoImageProcessor.from_pretrained(vision_model_name_or_path, **image_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(text_model_name_or_path)
        return cls(image_processor, tokenizer, **kwargs)

    def build_product_text(self, fields: Mapping) -> str:
        """Product fields (title, brand, category path, attributes) to one string, by this processor's template."""
        return build_product_text(fields, self.product_text_template)

    def __call__(self, images=None, text=None, **kwargs):
        """
        Images and/or texts to model inputs, as `CLIPProcessor` does. Each image is checked and converted first
        (`to_rgb_image`: errors name the image and its file). An empty or blank text is an error: it carries nothing
        to match, yet the model would score it like any title (alone among the candidates it gets probability 1).
        Long lists: `iter_batches` processes them in chunks.
        """
        offset = kwargs.pop("_offset", 0)  # where this chunk starts in `iter_batches`' list (for error messages)
        if images is None and text is None:
            raise ValueError("EclipProcessor needs images, text or both.")
        if images is not None:
            batch = _as_list(images)
            if not batch:
                raise ValueError("EclipProcessor got an empty list of images.")
            images = [to_rgb_image(image, offset + index) for index, image in enumerate(batch)]
        if text is not None:
            texts = [text] if isinstance(text, str) else text
            if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
                raise TypeError("text must be a string or a list of strings.")
            if len(texts) == 0:
                raise ValueError("EclipProcessor got an empty list of texts.")
            blank = [offset + index for index, t in enumerate(texts) if not t.strip()]
            if blank:
                raise ValueError(
                    f"text {blank[0]} is empty{f' (and {len(blank) - 1} more)' if len(blank) > 1 else ''}: an empty "
                    "title carries nothing to match, yet it would be scored like any other; drop it or give a real text."
                )
        kwargs.setdefault("truncation", True)
        if "max_length" not in kwargs and self.tokenizer.model_max_length > 100_000:
            kwargs["max_length"] = 512  # tokenizers saved without a limit report ~1e30
        return super().__call__(images=images, text=text, **kwargs)

    def iter_batches(self, images=None, text=None, batch_size: int = 256, **kwargs):
        """
        Process a long list in chunks: yields one `BatchFeature` per `batch_size` items (the keys `__call__` gives),
        so that memory holds one chunk's pixels, tokens and activations however long the list (image files are
        opened chunk by chunk). Embed each chunk and keep only the embeddings:

            embeds = torch.cat([model.get_text_features(**batch).pooler_output
                                for batch in processor.iter_batches(text=titles, batch_size=256)])

        With both `images` and `text` they must be equally long (item i is an image and its text). Errors name the
        item's position in the whole list.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        images = None if images is None else _as_list(images)
        texts = None if text is None else ([text] if isinstance(text, str) else list(text))
        if images is None and texts is None:
            raise ValueError("EclipProcessor needs images, text or both.")
        if images is not None and texts is not None and len(images) != len(texts):
            raise ValueError(f"iter_batches pairs images with texts: got {len(images)} images and {len(texts)} texts.")
        total = len(images if images is not None else texts)
        for start in range(0, total, batch_size):
            chunk = slice(start, start + batch_size)
            yield self(
                images=None if images is None else images[chunk], text=None if texts is None else texts[chunk],
                _offset=start, **kwargs,
            )


__all__ = ["EclipProcessor", "build_product_text", "open_image", "DEFAULT_PRODUCT_TEXT_TEMPLATE"]
