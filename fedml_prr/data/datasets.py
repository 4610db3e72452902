"""The dataset registry: every entry is a :class:`DatasetSpec` that owns its task and options.

A dataset is registered with one decorator on its factory::

    @register_dataset("derm_synthetic")
    def build(*, seed: int, image_size: int, scale: float = 0.25) -> Federation: ...

The spec takes the factory's keyword options and their defaults from its signature (``seed``
and ``image_size`` are given to every factory); a factory taking ``**options`` states them
(:func:`fedml_prr.data.layout.register_layout` does for the layouts on disk).
:func:`build_federation` rejects an unknown option with a one-line error listing the valid ones
before calling the factory.

Every built-in dataset takes the options ``clients`` and ``class_names``
(:mod:`fedml_prr.data.selection`) and registers a ``describe`` function: its federation's shape
without reading images (:func:`describe_dataset`), what a server that holds no data needs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from fedml_prr.data.federation import Federation, FederationInfo
from fedml_prr.data.partition import PARTITION_DEFAULTS, partition_federation, partition_info, split_partition_options
from fedml_prr.data.selection import check_selection
from fedml_prr.registry import Registry, check_options

#: The tasks a dataset (and a model) can be for.
TASKS = ("classification", "segmentation")

Factory = Callable[..., Federation]
#: ``describe(options) -> FederationInfo or None``: ``options`` are every option of the dataset,
#: defaults filled in; None when the shape cannot be told without reading the data.
Describer = Callable[[Mapping[str, Any]], Optional[FederationInfo]]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes
    ----------
    name:
        The registered name.
    factory:
        ``factory(*, seed, image_size, **options) -> Federation``.
    task:
        ``"classification"`` or ``"segmentation"``: what its labels are.
    options:
        Every option the factory accepts, with its default (read-only).
    describe:
        The federation's shape from the options alone (:data:`Describer`); None: never known
        without the data.
    """

    name: str
    factory: Factory
    task: str
    options: Mapping[str, Any]
    describe: Optional[Describer] = None

    def build(self, *, seed: int, image_size: int, **options: Any) -> Federation:
        """The federation; an option not in :attr:`options` raises
        :class:`~fedml_prr.registry.UnknownOptionError` (a ``ValueError``), and a federation
        without exactly the asked ``clients`` / ``class_names`` a ``ValueError``."""
        check_options("dataset", self.name, options, self.options)
        federation = self.factory(seed=seed, image_size=image_size, **options)
        if options.get("clients") is not None or options.get("class_names") is not None:
            check_selection(self.name, federation, options.get("clients"), options.get("class_names"))
        return federation

    def info(self, **options: Any) -> Optional[FederationInfo]:
        """``describe`` applied to the options with their defaults (unknown options raise as in :meth:`build`)."""
        check_options("dataset", self.name, options, self.options)
        return None if self.describe is None else self.describe({**self.options, **options})


DATASETS: Registry[DatasetSpec] = Registry("dataset")
"""Every registered dataset, by name (case-insensitive)."""


def factory_options(factory: Factory) -> Dict[str, Any]:
    """The keyword options of ``factory`` besides ``seed`` and ``image_size``, with their defaults.

    Raises
    ------
    TypeError
        ``factory`` takes ``**options`` (its options cannot be read off its signature) or an
        option without a default.
    """
    options = {}
    for parameter in inspect.signature(factory).parameters.values():
        if parameter.name in ("seed", "image_size"):
            continue
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"{factory.__qualname__} takes **{parameter.name}; register it with options=...")
        if parameter.default is inspect.Parameter.empty:
            raise TypeError(f"{factory.__qualname__}: option {parameter.name!r} needs a default")
        options[parameter.name] = parameter.default
    return options


def register_dataset(name: str, *, task: str = "classification", options: Optional[Mapping[str, Any]] = None,
                     describe: Optional[Describer] = None) -> Callable[[Factory], Factory]:
    """Register ``factory`` as dataset ``name`` (decorator; returns the factory unchanged).

    Parameters
    ----------
    task:
        ``"classification"`` or ``"segmentation"``.
    options:
        The options and defaults, for a factory taking ``**options``; default: read off the
        factory's signature.
    describe:
        ``describe(options) -> FederationInfo or None`` (:data:`Describer`); default: never known.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorator(factory: Factory) -> Factory:
        known = dict(options) if options is not None else factory_options(factory)
        DATASETS.register(name)(DatasetSpec(name, factory, task, MappingProxyType(known), describe))
        return factory

    return decorator


def build_federation(name: str, *, seed: int, image_size: int, **options: Any) -> Federation:
    """Build the registered dataset ``name``; label-partition options (``partition: dirichlet``, ...,
    :mod:`fedml_prr.data.partition`) re-split a classification dataset after it is built.

    Raises
    ------
    KeyError
        An unknown dataset (the message lists them all).
    ValueError
        An unknown option (:class:`~fedml_prr.registry.UnknownOptionError`, one line naming the
        dataset, the bad keys and the valid options), or whatever the factory rejects.
    """
    spec, partition, options = _split_options(name, options)
    federation = spec.build(seed=seed, image_size=image_size, **options)
    return federation if partition is None else partition_federation(federation, run_seed=seed, **partition)


def _split_options(name: str, options: Mapping[str, Any]) -> Tuple[DatasetSpec, Optional[Dict[str, Any]],
                                                                   Dict[str, Any]]:
    spec = DATASETS.get(name)
    partition, options = split_partition_options(options)
    if partition is not None and spec.task != "classification":
        raise ValueError(f"a label partition needs a classification dataset; {name!r} is {spec.task} "
                         "(remove partition from prr_dataset_options)")
    return spec, partition, options


def describe_dataset(name: str, *, seed: int = 0, **options: Any) -> Optional[FederationInfo]:
    """The shape of the federation :func:`build_federation` would build, without reading images:
    its name, task, class names and client names (what a server that holds no data needs).

    Parameters
    ----------
    seed:
        The run's seed, as given to :func:`build_federation` (it names a label partition whose
        ``partition_seed`` is not given; nothing else depends on it).
    options:
        The dataset's options (``prr_dataset_options``), the label partition's included.

    Returns
    -------
    FederationInfo or None
        Equal to ``build_federation(name, ...).info`` when the data on disk matches the layout;
        None when the dataset cannot tell without its data (``image_folder`` without both
        ``clients`` and ``class_names``; ``prostate_prr`` without ``clients``).  With a label
        partition: clients ``P0 .. P{K-1}``.

    Raises
    ------
    KeyError, ValueError
        As :func:`build_federation` for an unknown dataset, option or client, or a class list the
        dataset does not have.
    """
    spec, partition, options = _split_options(name, options)
    info = spec.info(**options)
    if info is None or partition is None:
        return info
    return partition_info(info, run_seed=seed, **partition)


def dataset_task(name: str) -> str:
    """``"segmentation"`` or ``"classification"`` for a registered dataset (unknown names:
    classification; building them raises the registry's error)."""
    return DATASETS.get(name).task if name in DATASETS else "classification"


def dataset_options(name: str) -> Dict[str, Any]:
    """The options of dataset ``name`` with their defaults (a new dict); unknown name: ``KeyError``.
    :func:`build_federation` also takes the label partition's (:func:`accepted_options`)."""
    return dict(DATASETS.get(name).options)


def accepted_options(name: str) -> Dict[str, Any]:
    """Every option :func:`build_federation` takes for dataset ``name``, with its default: the
    dataset's own and, for a classification dataset, the label partition's (``partition``, ...)."""
    spec = DATASETS.get(name)
    return {**spec.options, **(PARTITION_DEFAULTS if spec.task == "classification" else {})}
