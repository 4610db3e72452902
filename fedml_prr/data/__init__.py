"""Datasets as federations: the data model, the dataset registry and batched augmentation.

Pure torch / numpy / PIL; nothing here imports ``fedml``. Importing the package registers the
built-in datasets (``derm_synthetic``, ``image_folder``, the dermoscopy layouts ``derm_prr4``,
``derm_prr3``, ``isic2019``, ``ham10000``, and the prostate ones ``prostate_synthetic``,
``prostate_saml``, ``prostate_prr``); each registry entry is a
:class:`~fedml_prr.data.datasets.DatasetSpec` carrying its task and its options.
"""

from fedml_prr.data import (  # noqa: F401  (importing registers the datasets)
    dermoscopy,
    folder,
    prostate,
    synthetic_derm,
    synthetic_prostate,
)
from fedml_prr.data.datasets import (
    DATASETS,
    DatasetSpec,
    build_federation,
    dataset_options,
    dataset_task,
    register_dataset,
)
from fedml_prr.data.federation import (
    ClientData,
    Federation,
    ImageSplit,
    federation_from_datasets,
)

__all__ = [
    "DATASETS",
    "ClientData",
    "DatasetSpec",
    "Federation",
    "ImageSplit",
    "build_federation",
    "dataset_options",
    "dataset_task",
    "dermoscopy",
    "federation_from_datasets",
    "folder",
    "prostate",
    "register_dataset",
    "synthetic_derm",
    "synthetic_prostate",
]
