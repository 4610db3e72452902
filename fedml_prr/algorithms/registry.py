"""The algorithm registry: one :class:`AlgorithmSpec` per registered name.

Each algorithm module registers itself with one :func:`register_algorithm` call; importing
:mod:`fedml_prr.algorithms` imports every module, so the registry is complete.  This module
imports no algorithm, so algorithm modules can import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Type

from ..registry import Registry
from ..training.federated import FederatedClient, FederatedServer


@dataclass(frozen=True)
class AlgorithmSpec:
    """A registered algorithm.

    Attributes
    ----------
    client, server:
        Its :class:`FederatedClient` and :class:`FederatedServer` classes.
    params:
        Its frozen hyper-parameter dataclass (fields are the ``prr_<field>`` YAML keys).
    summary:
        One line for ``fedml-prr algorithms``.
    task_defaults:
        ``task name -> {prr_key: value}``: defaults of that task used for every key a config leaves
        unset (PRR's segmentation variant: ``t_init`` 1, ``tau`` 1, ...).
    """

    name: str
    client: Type[FederatedClient]
    server: Type[FederatedServer]
    params: type
    summary: str
    task_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


ALGORITHMS: Registry[AlgorithmSpec] = Registry("algorithm")


def register_algorithm(name: str, *, client, server, params, summary: str,
                       task_defaults: Optional[Mapping[str, Mapping[str, Any]]] = None) -> AlgorithmSpec:
    """Register an algorithm under ``name`` (case-insensitive; a duplicate is an error)."""
    spec = AlgorithmSpec(name, client, server, params, summary, dict(task_defaults or {}))
    ALGORITHMS.register(name)(spec)
    return spec


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec of ``name``; an unknown name raises ``KeyError`` listing every algorithm."""
    return ALGORITHMS.get(name)
