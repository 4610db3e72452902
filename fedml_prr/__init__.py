"""fedml_prr: Personalized Retrogress-Resilient federated learning (PRR) as a FedML plugin.

Chen et al., "Personalized Retrogress-Resilient Federated Learning Toward Imbalanced Medical
Data", IEEE TMI 41(12), 2022.  Layers, each importing only the ones before it (checked by
tests/test_layering.py, function-level imports included)::

    fedml_prr.core, .config, .registry, .files   pure math, the typed config, small utilities
    fedml_prr.data, fedml_prr.models              dataset and model registries
    fedml_prr.training                            the protocol and its engine: clients, servers, the
                                                  coordinator, tasks, local loops, results folder
    fedml_prr.algorithms                          PRR, its ablations and the baselines
    fedml_prr.fedml_adapter                       FedML's transports (MPI, gRPC), install(), FedML's
                                                  own trainers: the only package importing fedml
    fedml_prr.runtime                             single process, MPI and gRPC parties, launchers
    fedml_prr.api                                 the Python API
    fedml_prr.compare                             algorithm x seed matrices, statistics, tables, plots
    fedml_prr.cli                                 the ``fedml-prr`` command
"""

__version__ = "0.1.0"


def install() -> None:
    """Make FedML's own entry points (``fedml.init``, ``fedml.data.load``, ``fedml.model.create``,
    ``FedMLRunner``) run this plugin's algorithms, datasets and models; see
    :mod:`fedml_prr.fedml_adapter.install`."""
    from .api import install as _install

    _install()
