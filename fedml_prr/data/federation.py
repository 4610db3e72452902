"""The data model shared by every dataset: a federation of clients, each with three splits.

Images are kept as ``uint8`` tensors ``[N, 3, H, W]`` (compact, exact, cheap to move to a device);
conversion to model input happens batch-wise in :mod:`fedml_prr.data.augment`. A
:class:`Federation` validates itself on construction, so an existing one is always consistent.

``federation_from_datasets`` is the "bring your own data" entry point: any map-style torch
datasets yielding ``(image, label)`` become a federation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import torch

from fedml_prr.data.images import decode_image

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True, eq=False)
class ImageSplit:
    """One split of one client.

    Attributes
    ----------
    images:
        ``uint8`` tensor ``[N, 3, H, W]``.
    labels:
        ``int64`` tensor ``[N]`` of class indices (classification), or a segmentation mask per
        image: ``uint8`` or ``int64`` ``[N, H, W]`` of class indices (:attr:`is_segmentation`).

    Equality is identity (tensors have no single truth value).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be a uint8 tensor [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dim() == 3:  # segmentation masks
            if self.labels.dtype not in (torch.uint8, torch.int64) or self.labels.shape[1:] != self.images.shape[2:]:
                raise ValueError(f"masks must be uint8 or int64 [N, H, W] matching images {tuple(self.images.shape)}, "
                                 f"got {self.labels.dtype} {tuple(self.labels.shape)}")
        elif self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be an int64 tensor [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels; they must match one to one")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_segmentation(self) -> bool:
        """True when ``labels`` are per-pixel masks ``[N, H, W]``."""
        return self.labels.dim() == 3

    def class_counts(self, num_classes: int) -> torch.Tensor:
        """``int64 [num_classes]``: how many samples (segmentation: pixels) carry each label (on CPU)."""
        labels = self.labels.cpu()
        if self.is_segmentation:
            labels = labels.reshape(-1).long()
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels span [{labels.min()}, {labels.max()}], outside [0, {num_classes})")
        return torch.bincount(labels, minlength=num_classes)

    def to(self, device: Union[str, torch.device]) -> "ImageSplit":
        """A split with both tensors on ``device`` (tensors are shared if already there)."""
        return ImageSplit(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True, eq=False)
class ClientData:
    """The three splits of one client ("hospital")."""

    name: str
    train: ImageSplit
    valid: ImageSplit
    test: ImageSplit

    def split(self, split: str) -> ImageSplit:
        """The split called ``split`` (one of ``train``, ``valid``, ``test``)."""
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        return getattr(self, split)


@dataclass(frozen=True)
class FederationInfo:
    """A federation's shape without its data: what a server needs (it holds no images).

    Attributes
    ----------
    name:
        The dataset's name.
    task:
        ``"classification"`` or ``"segmentation"``.
    class_names:
        Label ``i`` means ``class_names[i]``.
    clients:
        The silos' names, in silo order.
    """

    name: str
    task: str
    class_names: tuple[str, ...]
    clients: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True, eq=False)
class Federation:
    """K clients sharing one label space and one image size; validated on construction.

    Attributes
    ----------
    name:
        Human-readable dataset name.
    class_names:
        ``C`` names; label ``i`` means ``class_names[i]``.
    clients:
        The clients in silo order (client ``k`` is silo ``k`` everywhere downstream).
    """

    name: str
    class_names: tuple[str, ...]
    clients: tuple[ClientData, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "clients", tuple(self.clients))
        self.validate()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def task(self) -> str:
        """``"segmentation"`` when the labels are per-pixel masks, else ``"classification"``."""
        return "segmentation" if self.clients[0].train.is_segmentation else "classification"

    @property
    def info(self) -> FederationInfo:
        """The federation's shape (name, task, class names, client names)."""
        return FederationInfo(self.name, self.task, self.class_names, tuple(c.name for c in self.clients))

    @property
    def image_size(self) -> int:
        """Image height ``H`` (images are ``H x W``, normally square)."""
        return int(self.clients[0].train.images.shape[2])

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending client if the federation is inconsistent."""
        if not self.clients:
            raise ValueError(f"federation {self.name!r} has no clients; give at least one")
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be non-empty and unique, got {self.class_names}")
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ValueError(f"client names must be unique, got {names}")
        size = tuple(self.clients[0].train.images.shape[2:])
        for client in self.clients:
            if len(client.train) == 0:
                raise ValueError(f"client {client.name!r} has an empty train split; give it training images or drop it")
            for split in SPLITS:
                part = client.split(split)
                if part.is_segmentation != self.clients[0].train.is_segmentation:
                    raise ValueError(f"client {client.name!r} {split} mixes masks and image labels with the other "
                                     "splits; a federation is either classification or segmentation")
                if len(part) and tuple(part.images.shape[2:]) != size:
                    raise ValueError(
                        f"client {client.name!r} {split} images are {tuple(part.images.shape[2:])}, "
                        f"other clients use {size}; resize all images to one size"
                    )
                if len(part) and (part.labels.min() < 0 or part.labels.max() >= self.num_classes):
                    raise ValueError(
                        f"client {client.name!r} {split} has labels in [{int(part.labels.min())}, "
                        f"{int(part.labels.max())}] but only {self.num_classes} classes {self.class_names}; "
                        "fix the labels or the class list"
                    )

    def describe(self) -> str:
        """A plain-text table of per-client, per-split class counts (segmentation: slices and
        the percentage of pixels of each class)."""
        if self.task == "segmentation":
            return self._describe_segmentation()
        width = max(6, *(len(n) + 1 for n in self.class_names))
        name_width = max(10, *(len(c.name) + 2 for c in self.clients))
        head = f"{'client':<{name_width}}{'split':<7}" + "".join(f"{n:>{width}}" for n in self.class_names) + f"{'total':>8}"
        lines = [
            f"{self.name}: {len(self.clients)} clients, {self.num_classes} classes, "
            f"images {self.image_size}x{self.image_size}",
            head,
        ]
        for client in self.clients:
            for split in SPLITS:
                counts = client.split(split).class_counts(self.num_classes).tolist()
                cells = "".join(f"{n:>{width}}" for n in counts)
                lines.append(f"{client.name:<{name_width}}{split:<7}{cells}{sum(counts):>8}")
        return "\n".join(lines)


    def _describe_segmentation(self) -> str:
        head = f"{'client':<10}{'split':<7}{'slices':>8}" + "".join(f"{n + ' %':>14}" for n in self.class_names)
        lines = [f"{self.name}: {len(self.clients)} clients, segmentation of {self.num_classes} classes, "
                 f"slices {self.image_size}x{self.image_size}", head]
        for client in self.clients:
            for split in SPLITS:
                part = client.split(split)
                counts = part.class_counts(self.num_classes).double()
                share = (100 * counts / counts.sum().clamp_min(1)).tolist()
                lines.append(f"{client.name:<10}{split:<7}{len(part):>8}" + "".join(f"{v:>14.2f}" for v in share))
        return "\n".join(lines)


def _split_from_dataset(dataset: object, num_classes: int, image_size: int, where: str) -> ImageSplit:
    images, labels = [], []
    for i in range(len(dataset)):  # type: ignore[arg-type]
        image, label = dataset[i]  # type: ignore[index]
        label = int(label)
        if not 0 <= label < num_classes:
            raise ValueError(f"{where} item {i}: label {label} outside [0, {num_classes}); fix the label or class_names")
        images.append(torch.from_numpy(decode_image(image, image_size, where=f"{where} item {i}")))
        labels.append(label)
    stacked = torch.stack(images) if images else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
    return ImageSplit(stacked, torch.tensor(labels, dtype=torch.int64))


def federation_from_datasets(
    clients: Mapping[str, Mapping[str, torch.utils.data.Dataset]],
    class_names: Sequence[str],
    *,
    image_size: int,
    name: str = "custom",
) -> Federation:
    """Build a federation from your own map-style datasets.

    Parameters
    ----------
    clients:
        ``client name -> {"train": ds, "valid": ds, "test": ds}`` (exactly these keys); client order
        is the mapping's order. Each ``ds[i]`` is ``(image, label)`` with ``image`` a PIL image
        (converted to RGB), a ``uint8`` numpy array ``H x W x 3``, or a tensor ``[3, H, W]``
        (``uint8``, or float in ``[0, 1]``), and ``label`` an int in ``[0, len(class_names))``.
    class_names:
        The ``C`` class names.
    image_size:
        Every image is resized (bilinear, antialiased) to ``image_size x image_size``.

    Raises
    ------
    KeyError
        A client lacks a split or has an unknown one.
    ValueError
        Empty train split, label out of range, wrong channel count or value range.
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    built = []
    for client_name, splits in clients.items():
        missing = [s for s in SPLITS if s not in splits]
        extra = [s for s in splits if s not in SPLITS]
        if missing or extra:
            raise KeyError(
                f"client {client_name!r}: splits must be exactly {SPLITS}; missing {missing}, unknown {extra}"
            )
        parts = {
            s: _split_from_dataset(splits[s], len(class_names), image_size, f"client {client_name!r} {s}")
            for s in SPLITS
        }
        if len(parts["train"]) == 0:
            raise ValueError(f"client {client_name!r} train split is empty; every client needs training data")
        built.append(ClientData(str(client_name), **parts))
    logger.info("built federation %r from %d client datasets", name, len(built))
    return Federation(name, tuple(class_names), tuple(built))
