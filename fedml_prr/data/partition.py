"""Label-skew federations: a seeded Dirichlet label partition of any classification federation.

The scheme of Yurochkin et al. (ICML 2019) and Wang et al. (FedMA, ICLR 2020), used by the FedALA
and FedRoD papers: for every class ``c`` the share of its images that each of the ``K`` new
clients receives is drawn from ``Dir(alpha * 1_K)``; the smaller ``alpha``, the more each client's
label distribution is concentrated on few classes.  Here the images of each split (train, valid,
test) are pooled over the original clients and the *same* per-class client shares are applied to
every split, so each new client's test distribution follows its training one.

Counts are exact: the ``n`` images of class ``c`` in a split go to the clients in numbers
``floor(n * p_k)`` plus one for the clients with the largest remainders (largest-remainder
apportionment), so every image lands in exactly one client.  Which images a client receives is a
seeded permutation within each class.  A draw that leaves a client with fewer than
``min_train_images`` training images, or with no validation or test image, is redrawn (at most
``max_draws`` times, then a ``ValueError`` says to raise ``alpha`` or lower ``clients``).

Pooling mixes the original clients: in ``derm_synthetic`` each new client gets images taken with
several original clients' imaging devices, so the partition trades the feature shift of the
original federation for label skew.  Segmentation federations (per-pixel labels) are refused.

Many clients: with few classes (``derm_synthetic`` has 3) the per-class draw cannot give 100
clients data at a small ``alpha`` - each client's share is the sum of 3 Dirichlet components, and
most are near zero.  ``partition: client_dirichlet`` is the per-client scheme of Hsu et al.
("Measuring the effects of non-identical data distribution for federated visual
classification", 2019): client ``k`` draws its class distribution ``q_k ~ Dir(alpha * C * p)`` (``p``:
the pooled training class distribution over the ``C`` classes, so balanced classes give every
component ``alpha``, as the per-class scheme), every client gets the same number of images of a split
(``N_s / K``, largest remainder), of classes in proportion to ``q_k``; a class whose images have
run out is replaced by the classes still available, in proportion to what is left.  Clients are
filled in a seeded random order, so no client is always served last.  Every image again lands
in exactly one client, and a client's valid and test splits follow its ``q_k``.

Options in a config (``prr_dataset_options``, see :func:`split_partition_options`)::

    {scale: 0.25, partition: dirichlet, alpha: 0.3, clients: 4, partition_seed: 0}
    {scale: 1.0, partition: client_dirichlet, alpha: 0.1, clients: 100, min_train_images: 8}

A run writes the partition's class table (:meth:`~fedml_prr.data.federation.Federation.describe`)
to ``federation.txt`` in its results folder.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from fedml_prr.data.federation import SPLITS, ClientData, Federation, FederationInfo, ImageSplit

logger = logging.getLogger(__name__)

#: keys of ``prr_dataset_options`` that belong to the partition, not to the dataset factory
PARTITION_KEYS = ("partition", "alpha", "clients", "partition_seed", "min_train_images")
PARTITIONS = ("dirichlet", "client_dirichlet")
#: their defaults: no partition unless ``partition`` is given
PARTITION_DEFAULTS: Dict[str, Any] = {"partition": None, "alpha": None, "clients": None, "partition_seed": None,
                                      "min_train_images": 16}


def largest_remainder(total: int, shares: np.ndarray) -> np.ndarray:
    """Integers ``>= 0`` summing to ``total``, proportional to ``shares`` (which sum to 1)."""
    exact = total * np.asarray(shares, dtype=np.float64)
    counts = np.floor(exact).astype(np.int64)
    missing = total - int(counts.sum())
    if missing > 0:
        order = np.argsort(-(exact - counts), kind="stable")  # largest fractional part first, ties by index
        counts[order[:missing]] += 1
    return counts


def _pooled_splits(federation: Federation) -> Dict[str, ImageSplit]:
    """Each split's images of every client, concatenated in client order."""
    return {s: ImageSplit(torch.cat([c.split(s).images for c in federation.clients]),
                          torch.cat([c.split(s).labels for c in federation.clients])) for s in SPLITS}


def _assign_images(pooled: Mapping[str, ImageSplit], counts: Mapping[str, np.ndarray],
                   rng: np.random.Generator) -> list:
    """Clients ``P0 ..`` holding ``counts[s][c, k]`` images of class ``c`` in split ``s``: a seeded
    permutation of each class's images, cut in client order."""
    num_classes, clients = next(iter(counts.values())).shape
    members: Dict[str, list] = {s: [[] for _ in range(clients)] for s in SPLITS}
    for s in SPLITS:
        labels = pooled[s].labels.numpy()
        for c in range(num_classes):
            chosen = rng.permutation(np.flatnonzero(labels == c))
            bounds = np.concatenate([[0], np.cumsum(counts[s][c])])
            for k in range(clients):
                members[s][k].append(chosen[bounds[k]:bounds[k + 1]])
    new_clients = []
    for k in range(clients):
        parts = {}
        for s in SPLITS:
            index = torch.from_numpy(np.sort(np.concatenate(members[s][k]))).long()
            parts[s] = ImageSplit(pooled[s].images[index], pooled[s].labels[index])
        new_clients.append(ClientData(f"P{k}", **parts))
    return new_clients


def _checked_arguments(federation: Federation, alpha: float, clients: Optional[int], min_train_images: int) -> int:
    """The number of clients of a Dirichlet partition (default: the federation's), after checking the arguments."""
    if federation.task != "classification":
        raise ValueError(f"the Dirichlet label partition needs a classification dataset; {federation.name!r} is "
                         f"{federation.task} (per-pixel labels)")
    clients = len(federation.clients) if clients is None else clients
    if not alpha > 0 or clients < 1 or min_train_images < 1:
        raise ValueError(f"the Dirichlet partition needs alpha > 0, clients >= 1 and min_train_images >= 1; got "
                         f"alpha={alpha}, clients={clients}, min_train_images={min_train_images}")
    return clients


def dirichlet_partition(federation: Federation, *, alpha: float, clients: Optional[int] = None, seed: int,
                        min_train_images: int = 16, max_draws: int = 100) -> Federation:
    """Re-split ``federation`` into ``clients`` clients with Dirichlet(``alpha``) label skew.

    Parameters
    ----------
    federation:
        A classification federation; not modified.
    alpha:
        Concentration of the per-class client shares (> 0); small = strong label skew.
    clients:
        Number of new clients ``K`` (None: as many as ``federation`` has).
    seed:
        Seed of the shares and of the image assignment: the same seed (and numpy version) gives
        the same partition.
    min_train_images:
        Fewest training images a client may get; every client also gets at least one
        validation and one test image when the pooled split has images.
    max_draws:
        Draws of the shares before giving up.

    Returns
    -------
    Federation
        Clients ``P0 .. P{K-1}``; every image of every split belongs to exactly one of them, and
        client ``k`` holds ``n_{c,s} * p_{c,k}`` (rounded as above) images of class ``c`` in split
        ``s``.  Its :meth:`~Federation.describe` is the partition's class table.

    Raises
    ------
    ValueError
        A segmentation federation, ``alpha <= 0``, ``clients < 1``, or no acceptable draw.
    """
    clients = _checked_arguments(federation, alpha, clients, min_train_images)
    num_classes = federation.num_classes
    pooled = _pooled_splits(federation)
    class_totals = {s: pooled[s].class_counts(num_classes).numpy() for s in SPLITS}
    rng = np.random.default_rng(seed)
    for draw in range(1, max_draws + 1):
        shares = rng.dirichlet(np.full(clients, float(alpha)), size=num_classes)  # [C, K], rows sum to 1
        counts = {s: np.stack([largest_remainder(int(class_totals[s][c]), shares[c]) for c in range(num_classes)])
                  for s in SPLITS}  # [C, K]
        sizes = {s: counts[s].sum(0) for s in SPLITS}
        if (sizes["train"] >= min_train_images).all() and all(
                (sizes[s] >= 1).all() or len(pooled[s]) == 0 for s in ("valid", "test")):
            break
    else:
        raise ValueError(f"the Dirichlet partition (alpha={alpha}, {clients} clients) left a client with fewer than "
                         f"{min_train_images} training images or no validation/test image in {max_draws} draws; "
                         "raise alpha or lower clients")
    new_clients = _assign_images(pooled, counts, rng)
    logger.info("Dirichlet partition of %s: alpha %g, %d clients, seed %d (draw %d)", federation.name, alpha,
                clients, seed, draw)
    return Federation(partition_name(federation.name, alpha=alpha, seed=seed), federation.class_names,
                      tuple(new_clients))


def client_dirichlet_partition(federation: Federation, *, alpha: float, clients: Optional[int] = None, seed: int,
                               min_train_images: int = 16) -> Federation:
    """Re-split ``federation`` into ``clients`` equal-sized clients, client ``k``'s classes drawn from
    ``q_k ~ Dir(alpha * C * p)`` (module docstring; Hsu et al. 2019).

    Parameters and the result are those of :func:`dirichlet_partition`, except that every client
    holds ``N_s / K`` images of split ``s`` (largest remainder), so it fails only when a client
    would get fewer than ``min_train_images`` training images (or no validation/test image):
    ``ValueError`` naming the numbers.
    """
    clients = _checked_arguments(federation, alpha, clients, min_train_images)
    num_classes = federation.num_classes
    pooled = _pooled_splits(federation)
    class_totals = {s: pooled[s].class_counts(num_classes).numpy().astype(np.int64) for s in SPLITS}
    for s, least in (("train", min_train_images), ("valid", 1), ("test", 1)):
        have = int(class_totals[s].sum())
        if have // clients < least and not (s != "train" and have == 0):
            raise ValueError(f"{clients} clients of the {have} {s} images of {federation.name!r} would get "
                             f"{have // clients} each, fewer than {least}; lower clients, or raise the dataset's scale")
    rng = np.random.default_rng(seed)
    prior = class_totals["train"] / class_totals["train"].sum()
    shares = rng.dirichlet(np.maximum(alpha * prior * num_classes, 1e-3), size=clients)  # [K, C]
    order = rng.permutation(clients)
    counts = {s: np.zeros((num_classes, clients), dtype=np.int64) for s in SPLITS}
    for s in SPLITS:
        left = class_totals[s].copy()
        sizes = largest_remainder(int(left.sum()), np.full(clients, 1.0 / clients))
        for k in order:
            want = largest_remainder(int(sizes[k]), shares[k])
            got = np.minimum(want, left)
            short = int(sizes[k] - got.sum())
            if short > 0:  # classes run out: fill from what is left, in proportion
                rest = left - got
                got += np.minimum(rest, largest_remainder(short, rest / rest.sum()))
            counts[s][:, k] = got
            left -= got
    new_clients = _assign_images(pooled, counts, rng)
    logger.info("client-Dirichlet partition of %s: alpha %g, %d clients, seed %d", federation.name, alpha, clients, seed)
    return Federation(partition_name(federation.name, alpha=alpha, seed=seed, scheme="client_dirichlet"),
                      federation.class_names, tuple(new_clients))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def split_partition_options(options: Mapping[str, Any]) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
    """``(partition options or None, dataset factory options)`` of ``prr_dataset_options``.

    ``clients`` is the partition's client count when it is a number and the dataset's own option
    (the clients to build, :mod:`fedml_prr.data.selection`) when it is a list of names.

    Raises ``ValueError`` when partition keys come without ``partition``, name an unknown one, or
    ``partition`` comes with a list of client names.
    """
    partition = {k: options[k] for k in PARTITION_KEYS if k in options}
    rest = {k: v for k, v in options.items() if k not in PARTITION_KEYS}
    if "clients" in partition and not _is_count(partition["clients"]):
        if "partition" in partition:
            raise ValueError(f"clients: {partition['clients']!r} cannot come with partition: the label partition "
                             "pools the images of every client and re-splits them, so no client's data stays its "
                             "own; give clients as a number (how many partitioned clients) or leave partition out")
        rest["clients"] = partition.pop("clients")
    if not partition:
        return None, rest
    if "partition" not in partition:
        if "clients" in partition:
            raise ValueError(f"clients: {partition['clients']} is the label partition's client count; add partition: "
                             "dirichlet, or give client names (clients: [A, B]) to build only those clients")
        raise ValueError(f"dataset options {sorted(partition)} belong to a label partition; add partition: dirichlet")
    if partition["partition"] not in PARTITIONS:
        raise ValueError(f"unknown partition {partition['partition']!r}; known partitions: {', '.join(PARTITIONS)}")
    return partition, rest


def _partition_arguments(*, run_seed: int, partition: str, alpha: Any = None, clients: Optional[int] = None,
                         partition_seed: Optional[int] = None, min_train_images: int = 16) -> Dict[str, Any]:
    """The keyword arguments of :func:`dirichlet_partition` from config options."""
    if alpha is None:
        raise ValueError("partition: dirichlet needs alpha (e.g. alpha: 0.3)")
    return {"alpha": float(alpha), "clients": clients,
            "seed": run_seed if partition_seed is None else int(partition_seed),
            "min_train_images": int(min_train_images)}


def partition_name(name: str, *, alpha: float, seed: int, scheme: str = "dirichlet") -> str:
    """The name of a partitioned federation."""
    return f"{name} {scheme}(alpha={alpha:g}, seed={seed})"


def partition_federation(federation: Federation, *, run_seed: int, **options: Any) -> Federation:
    """Apply the partition named by ``options["partition"]`` with config options (``partition_seed``
    defaults to the run's seed)."""
    scheme = options.get("partition", "dirichlet")
    make = client_dirichlet_partition if scheme == "client_dirichlet" else dirichlet_partition
    return make(federation, **_partition_arguments(run_seed=run_seed, **options))


def partition_info(info: FederationInfo, *, run_seed: int, **options: Any) -> FederationInfo:
    """What :func:`partition_federation` makes of a federation described by ``info``, without its
    data: clients ``P0 .. P{K-1}`` (``K``: ``clients``, default as many as ``info``), the same classes."""
    arguments = _partition_arguments(run_seed=run_seed, **options)
    count = len(info.clients) if arguments["clients"] is None else arguments["clients"]
    if count < 1:
        raise ValueError(f"the Dirichlet partition needs clients >= 1, got {count}")
    return FederationInfo(partition_name(info.name, alpha=arguments["alpha"], seed=arguments["seed"],
                                         scheme=options.get("partition", "dirichlet")), info.task,
                          info.class_names, tuple(f"P{k}" for k in range(count)))
