"""Datasets as federations: the data model, the dataset registry and batched augmentation.

Pure torch / numpy / PIL; nothing here imports ``fedml``. Importing the package registers the
built-in datasets (``derm_synthetic``, ``image_folder``, the dermoscopy layouts ``derm_prr4``,
``derm_prr3``, ``isic2019``, ``ham10000``, and the prostate ones ``prostate_synthetic``,
``prostate_saml``, ``prostate_prr``).
"""

from fedml_prr.data import (  # noqa: F401  (importing registers the datasets)
    dermoscopy,
    folder,
    prostate,
    synthetic_derm,
    synthetic_prostate,
)
from fedml_prr.data.federation import (
    DATASETS,
    ClientData,
    Federation,
    ImageSplit,
    federation_from_datasets,
)
from fedml_prr.data.partition import partition_federation, split_partition_options

__all__ = [
    "DATASETS",
    "ClientData",
    "Federation",
    "ImageSplit",
    "build_federation",
    "dataset_task",
    "dermoscopy",
    "federation_from_datasets",
    "folder",
    "prostate",
    "synthetic_derm",
    "synthetic_prostate",
]


def build_federation(name: str, *, seed: int, image_size: int, **options: object) -> Federation:
    """Build the registered dataset ``name``; an unknown name raises ``KeyError`` listing them all.
    Partition options (``partition: dirichlet``, ...) re-split it (:mod:`fedml_prr.data.partition`)."""
    partition, options = split_partition_options(options)
    federation = DATASETS.get(name)(seed=seed, image_size=image_size, **options)
    return federation if partition is None else partition_federation(federation, run_seed=seed, **partition)


def dataset_task(name: str) -> str:
    """``"segmentation"`` or ``"classification"`` for a registered dataset (unknown names:
    classification; building them raises the registry's error)."""
    return getattr(DATASETS.get(name), "task", "classification") if name in DATASETS else "classification"
