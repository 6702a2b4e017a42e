"""Image decoding and preprocessing from a Hugging Face preprocessor_config.json (resize, crop, rescale, normalize).

PIL does the decode and resize (same resampling filters as transformers' PIL
image processors); torch does the arithmetic. Decoding is guarded: byte size
and pixel count are bounded before any pixel data is decompressed.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGENET_STANDARD = (0.5, 0.5, 0.5)


class ImageError(ValueError):
    """The bytes are not an image we accept; `status` is the HTTP status the caller should answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageProcessor:
    height: int
    width: int
    shortest_edge: int | None = None  # resize the short side to this, keep aspect, then center-crop to height x width
    resample: int = Image.Resampling.BILINEAR
    do_resize: bool = True
    do_center_crop: bool = False
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    mean: tuple[float, ...] = IMAGENET_STANDARD
    std: tuple[float, ...] = IMAGENET_STANDARD
    max_bytes: int = 20 << 20
    max_pixels: int = 40_000_000

    @classmethod
    def from_dir(cls, path: Path, image_size: int) -> "ImageProcessor":
        file = path / "preprocessor_config.json"
        cfg = json.loads(file.read_text()) if file.exists() else {}
        size = cfg.get("size", {"height": image_size, "width": image_size})
        if isinstance(size, int):
            size = {"height": size, "width": size}
        crop = cfg.get("crop_size") or {}
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        shortest = size.get("shortest_edge")
        height = crop.get("height") or size.get("height") or shortest or image_size
        width = crop.get("width") or size.get("width") or shortest or image_size
        return cls(height=height, width=width, shortest_edge=shortest,
                   resample=cfg.get("resample", Image.Resampling.BILINEAR), do_resize=cfg.get("do_resize", True),
                   do_center_crop=cfg.get("do_center_crop", shortest is not None),
                   do_rescale=cfg.get("do_rescale", True), rescale_factor=cfg.get("rescale_factor", 1 / 255),
                   do_normalize=cfg.get("do_normalize", True),
                   mean=tuple(cfg.get("image_mean", IMAGENET_STANDARD)), std=tuple(cfg.get("image_std", IMAGENET_STANDARD)))

    def decode(self, data: bytes) -> Image.Image:
        if not data:
            raise ImageError("image is empty")
        if len(data) > self.max_bytes:
            raise ImageError(f"image is {len(data)} bytes; the limit is {self.max_bytes}", status=413)
        try:
            with warnings.catch_warnings():
                # Turn PIL's decompression-bomb warning into an error instead of a log line.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                if img.width * img.height > self.max_pixels:
                    raise ImageError(f"image is {img.width}x{img.height} pixels; the limit is {self.max_pixels} pixels",
                                     status=413)
                img.load()
        except ImageError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
                Image.DecompressionBombError) as e:
            raise ImageError(f"could not decode image: {e}") from None
        return img.convert("RGB")

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """RGB image -> pixel values [C, H, W] float32."""
        if self.do_resize:
            if self.shortest_edge is not None:
                scale = self.shortest_edge / min(img.width, img.height)
                img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), self.resample)
            else:
                img = img.resize((self.width, self.height), self.resample)
        if self.do_center_crop:
            left, top = (img.width - self.width) // 2, (img.height - self.height) // 2
            img = img.crop((left, top, left + self.width, top + self.height))
        x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)  # [H, W, C] -> [C, H, W]
        if self.do_rescale:
            x = x * self.rescale_factor
        if self.do_normalize:
            x = (x - torch.tensor(self.mean)[:, None, None]) / torch.tensor(self.std)[:, None, None]
        return x
