"""Decoding one image (or mask) into a square ``uint8`` array: the one path every loader takes.

:func:`decode_image` accepts an image file, or an image already in memory (a PIL image, a numpy
array or a tensor), and returns ``uint8 [3, S, S]`` (RGB) or, for a mask, ``uint8 [S, S]``.
The caller chooses the resampling filter: ``bilinear`` for images (the default), ``bicubic`` for
the PRR reference prostate slices, ``nearest`` for masks (their default).

* Files are read with PIL and resized by PIL (its bilinear and bicubic filters are
  antialiased).  With ``draft=True`` a JPEG is first decoded at the smallest DCT scale (1/2,
  1/4, 1/8) whose size is still at least ``S`` (PIL ``draft``; several times faster for large
  photographs).  A reduced side is rounded up (600 / 8 = 75, 450 / 8 = 56.25 -> 57 rows), so
  only the box PIL reports as the picture (56.25 rows) is resized: the field of view is exact,
  and the result differs from a full decode by about half a grey level on average.
* Images in memory are resized by torch (``F.interpolate``, antialiased for bilinear and
  bicubic) in floating point, so a float tensor is quantised once, after resizing.

Errors name the file (or the ``where`` of an in-memory image) and say what to do.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

PathLike = Union[str, Path]
ImageSource = Union[PathLike, Image.Image, np.ndarray, torch.Tensor]

#: Resampling filters by name (PIL for files, torch mode names for arrays and tensors).
RESAMPLING = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
              "bicubic": Image.Resampling.BICUBIC}

_UNREADABLE = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)


def _noun(mask: bool) -> str:
    return "mask" if mask else "image"


def _check_resample(resample: Optional[str], mask: bool) -> str:
    resample = resample or ("nearest" if mask else "bilinear")
    if resample not in RESAMPLING:
        raise ValueError(f"resample must be one of {sorted(RESAMPLING)}, got {resample!r}")
    return resample


def read_image_size(path: PathLike, *, mask: bool = False) -> Tuple[int, int]:
    """``(width, height)`` of an image file, from its header (the pixels are not decoded).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not an image PIL can read.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError as error:
        raise FileNotFoundError(f"missing {_noun(mask)} {path}; restore the file or remove it from the "
                                "dataset") from error
    except _UNREADABLE as error:
        raise ValueError(f"cannot read {_noun(mask)} {path}: {error}; replace the file or remove it from the "
                         "dataset") from error


def _decode_file(path: Path, size: int, mask: bool, resample: str, draft: bool) -> np.ndarray:
    mode = "L" if mask else "RGB"
    try:
        with Image.open(path) as image:
            box = None
            if draft:  # JPEG only: decode at a reduced DCT scale, still >= size
                reduced = image.draft(mode, (size, size))
                box = reduced[1] if reduced else None  # the picture within the rounded-up reduced image
            image = image.convert(mode)
            if image.size != (size, size) or (box is not None and tuple(box) != (0, 0, *image.size)):
                image = image.resize((size, size), RESAMPLING[resample], box=box)
            pixels = np.array(image, dtype=np.uint8)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"missing {_noun(mask)} {path}; restore the file or remove it from the "
                                "dataset") from error
    except _UNREADABLE as error:
        raise ValueError(f"cannot read {_noun(mask)} {path}: {error}; replace the file or remove it from the "
                         "dataset") from error
    return pixels if mask else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _in_memory_tensor(image: object, mask: bool, where: str) -> torch.Tensor:
    """An in-memory image as a CPU tensor ``[3, H, W]`` (mask: ``[H, W]``), dtype unchanged."""
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("L" if mask else "RGB"), dtype=np.uint8).copy()
        return torch.from_numpy(array) if mask else torch.from_numpy(array).permute(2, 0, 1)
    if isinstance(image, np.ndarray):
        if mask:
            return torch.from_numpy(np.ascontiguousarray(image))
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{where}: numpy images must be H x W x 3 (RGB), got shape {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if isinstance(image, torch.Tensor):
        return image.detach().cpu()
    raise TypeError(f"{where}: image must be a PIL image, numpy array or tensor, got {type(image).__name__}")


def _decode_memory(image: object, size: int, mask: bool, resample: str, where: str) -> np.ndarray:
    tensor = _in_memory_tensor(image, mask, where)
    if mask:
        if tensor.dim() != 2 or tensor.is_floating_point() or tensor.is_complex():
            raise ValueError(f"{where}: a mask must be an integer [H, W] array, got {tensor.dtype} "
                             f"{tuple(tensor.shape)}")
        if tensor.numel() and (tensor.min() < 0 or tensor.max() > 255):
            raise ValueError(f"{where}: mask values must lie in [0, 255], got [{tensor.min()}, {tensor.max()}]")
        if tuple(tensor.shape) != (size, size):
            tensor = F.interpolate(tensor[None, None].float(), size=(size, size), mode="nearest")[0, 0]
        return tensor.round().to(torch.uint8).contiguous().numpy()
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(f"{where}: expected 3 colour channels [3, H, W], got shape {tuple(tensor.shape)}; "
                         "convert to RGB")
    if tensor.is_floating_point():
        if tensor.numel() and (tensor.min() < 0 or tensor.max() > 1):
            raise ValueError(f"{where}: float images must lie in [0, 1], got [{tensor.min():.3g}, {tensor.max():.3g}]")
        tensor = tensor.float()
    elif tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    else:
        raise ValueError(f"{where}: image dtype must be uint8 or float, got {tensor.dtype}")
    if tuple(tensor.shape[1:]) != (size, size):
        smooth = resample != "nearest"
        tensor = F.interpolate(tensor[None], size=(size, size), mode=resample,
                               align_corners=False if smooth else None, antialias=smooth)[0]
    return (tensor.clamp(0, 1) * 255).round().to(torch.uint8).contiguous().numpy()


def decode_image(source: ImageSource, size: int, *, mask: bool = False, resample: Optional[str] = None,
                 draft: bool = False, where: Optional[str] = None) -> np.ndarray:
    """One image (or mask) as a square ``uint8`` array.

    Parameters
    ----------
    source:
        A file path (read with PIL), or an image in memory: a PIL image, a numpy array
        ``H x W x 3`` or a tensor ``[3, H, W]``, ``uint8`` or float in ``[0, 1]`` (a mask: ``[H, W]``
        integers in ``[0, 255]``).
    size:
        Side ``S`` of the square result; other sizes are resized (the whole field of view is
        kept: non-square images are squeezed).
    mask:
        Decode a mask: grayscale (PIL mode ``L``), ``[S, S]``, default filter ``nearest``.
    resample:
        ``"bilinear"`` (images' default), ``"bicubic"`` or ``"nearest"`` (masks' default).
    draft:
        Files only: let PIL decode a JPEG at a reduced scale still at least ``size`` (faster;
        pixels differ from a full decode by about half a grey level on average).
    where:
        Names an in-memory image in error messages (files are named by their path).

    Returns
    -------
    numpy.ndarray
        ``uint8 [3, S, S]`` (image) or ``uint8 [S, S]`` (mask), a new writable, C-contiguous array.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        An unreadable file; an in-memory image of the wrong shape, dtype or value range.
    TypeError
        An in-memory object that is not an image.
    """
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    resample = _check_resample(resample, mask)
    if isinstance(source, (str, Path)):
        return _decode_file(Path(source), size, mask, resample, draft)
    return _decode_memory(source, size, mask, resample, where or "image")


def default_workers() -> int:
    """Decoding threads: the CPU count, between 1 and 8."""
    return max(1, min(8, os.cpu_count() or 1))


def decode_images(paths: Sequence[Path], image_size: int, out: np.ndarray, *, workers: Optional[int] = None,
                  progress: Optional[Callable[[int], None]] = None, chunk: int = 256,
                  resample: str = "bilinear", draft: bool = True) -> np.ndarray:
    """Decode the image files ``paths`` into ``out`` (``uint8 [N, 3, S, S]``, e.g. a memory map), in order.

    Threads decode in parallel (PIL releases the GIL); ``progress(n)`` is called after each
    chunk of ``n`` images.  ``resample`` and ``draft`` as in :func:`decode_image`.  The first
    unreadable file (in order) raises its :func:`decode_image` error.
    """
    if out.shape != (len(paths), 3, image_size, image_size) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 {(len(paths), 3, image_size, image_size)}, got {out.dtype} {out.shape}")
    workers = workers or default_workers()

    def decode(path: Path) -> np.ndarray:
        return decode_image(path, image_size, resample=resample, draft=draft)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), chunk):
            batch = paths[start:start + chunk]
            for i, image in enumerate(pool.map(decode, batch)):
                out[start + i] = image
            if progress is not None:
                progress(len(batch))
    return out
