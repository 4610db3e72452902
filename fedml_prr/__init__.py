"""fedml_prr: Personalized Retrogress-Resilient federated learning (PRR) as a FedML plugin.

Chen et al., "Personalized Retrogress-Resilient Federated Learning Toward Imbalanced Medical
Data", IEEE TMI 41(12), 2022.  Layers, imports pointing one way::

    fedml_prr.core        pure torch math (no fedml)
    fedml_prr.models,
    fedml_prr.data        model / dataset registries (no fedml)
    fedml_prr.training    local training and per-client state (no fedml)
    fedml_prr.fedml_adapter, fedml_prr.runtime, fedml_prr.cli   the only modules importing fedml
"""

__version__ = "0.1.0"


def install() -> None:
    """Make FedML's own entry points (``fedml.init``, ``fedml.data.load``, ``fedml.model.create``,
    ``FedMLRunner``) run this plugin's algorithms, datasets and models; see
    :mod:`fedml_prr.fedml_adapter.install`."""
    from .fedml_adapter.install import install as _install

    _install()
