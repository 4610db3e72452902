"""Datasets as federations: the data model, the dataset registry and batched augmentation.

Pure torch / numpy / PIL; nothing here imports ``fedml``. Importing the package registers the
built-in datasets (``derm_synthetic``, ``image_folder``, and the dermoscopy layouts
``derm_prr4``, ``derm_prr3``, ``isic2019``, ``ham10000``).
"""

from fedml_prr.data import dermoscopy, folder, synthetic_derm  # importing registers the datasets
from fedml_prr.data.federation import (
    DATASETS,
    ClientData,
    Federation,
    ImageSplit,
    federation_from_datasets,
)

__all__ = [
    "DATASETS",
    "ClientData",
    "Federation",
    "ImageSplit",
    "build_federation",
    "dermoscopy",
    "federation_from_datasets",
    "folder",
    "synthetic_derm",
]


def build_federation(name: str, *, seed: int, image_size: int, **options: object) -> Federation:
    """Build the registered dataset ``name``; an unknown name raises ``KeyError`` listing them all."""
    return DATASETS.get(name)(seed=seed, image_size=image_size, **options)
