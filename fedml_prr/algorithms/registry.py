"""The algorithm registry: one :class:`AlgorithmSpec` per registered name.

Each algorithm module registers its client and server with one :func:`register_algorithm` call
(its hyper-parameters, summary and task defaults are declared, torch-free, in
:mod:`fedml_prr.config.algorithms`); importing
:mod:`fedml_prr.algorithms` imports every module, so the registry is complete.  This module
imports no algorithm, so algorithm modules can import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Type

from ..config.algorithms import DECLARED
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


def register_algorithm(name: str, *, client, server, params: Optional[type] = None, summary: Optional[str] = None,
                       task_defaults: Optional[Mapping[str, Mapping[str, Any]]] = None) -> AlgorithmSpec:
    """Register an algorithm under ``name`` (case-insensitive; a duplicate is an error).

    A built-in algorithm is declared in :mod:`fedml_prr.config.algorithms` (its hyper-parameters,
    summary and task defaults, importable without torch) and registers only its ``client`` and
    ``server`` here.  Any other algorithm (your own) gives ``params`` and ``summary`` itself.
    """
    if name in DECLARED:
        declared = DECLARED.get(name)
        given = {"params": params, "summary": summary, "task_defaults": task_defaults}
        clash = [key for key, value in given.items() if value is not None and value != getattr(declared, key)]
        if clash:
            raise ValueError(f"algorithm {name!r} is declared in fedml_prr.config.algorithms; its {', '.join(clash)} "
                             "must come from there")
        params, summary, task_defaults = declared.params, declared.summary, declared.task_defaults
    elif params is None or summary is None:
        raise ValueError(f"algorithm {name!r}: give params (its hyper-parameter dataclass) and summary")
    spec = AlgorithmSpec(name, client, server, params, summary, dict(task_defaults or {}))
    ALGORITHMS.register(name)(spec)
    return spec


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec of ``name``; an unknown name raises ``KeyError`` listing every algorithm."""
    return ALGORITHMS.get(name)
