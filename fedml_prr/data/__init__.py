"""Datasets as federations: the data model, the dataset registry and batched augmentation.

Pure torch / numpy / PIL; nothing here imports ``fedml``. Importing the package registers the
built-in datasets (``derm_synthetic``, ``image_folder``, the dermoscopy layouts ``derm_prr4``,
``derm_prr3``, ``isic2019``, ``ham10000``, and the prostate ones ``prostate_synthetic``,
``prostate_saml``, ``prostate_prr``); each registry entry is a
:class:`~fedml_prr.data.datasets.DatasetSpec` carrying its task and its options.  Every dataset
can be built for some of its clients only (option ``clients``) with a fixed class list (option
``class_names``), see :mod:`fedml_prr.data.selection`; :func:`describe_dataset` tells the
federation's shape without its data.
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
    describe_dataset,
    dataset_task,
    register_dataset,
)
from fedml_prr.data.federation import (
    ClientData,
    Federation,
    FederationInfo,
    ImageSplit,
    federation_from_datasets,
)

__all__ = [
    "DATASETS",
    "ClientData",
    "DatasetSpec",
    "Federation",
    "FederationInfo",
    "ImageSplit",
    "build_federation",
    "dataset_options",
    "dataset_task",
    "dermoscopy",
    "describe_dataset",
    "federation_from_datasets",
    "folder",
    "prostate",
    "register_dataset",
    "synthetic_derm",
    "synthetic_prostate",
]
