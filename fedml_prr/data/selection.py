"""One hospital's data: a dataset built for some of its clients, with a fixed list of class names.

Every registered dataset takes two options (:data:`SELECTION_OPTIONS`):

* ``clients: [names]`` (default: all): build only these clients, reading only their files, so a
  hospital's machine needs only its own part of the layout.  The clients keep the dataset's order
  (client ``k`` of a restricted build is the ``k``-th selected one in that order), and everything
  seeded per client (a generator, a case split, a lesion re-split) is seeded by the client's
  identity in the federation, so a restricted build gives exactly the tensors of the full one.
* ``class_names: [names]`` (default: the dataset's own): label ``i`` means ``class_names[i]``.
  ``image_folder`` maps its class folders to this list by name (a hospital may lack a class);
  a dataset with fixed classes accepts only its own list.

Every error is one line naming the dataset and the valid values.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

from fedml_prr.data.federation import Federation

#: The options every dataset takes, besides its own (default None: all clients, its own classes).
SELECTION_OPTIONS = {"clients": None, "class_names": None}


def name_list(value: Any, option: str, dataset: str) -> Optional[Tuple[str, ...]]:
    """``value`` as a tuple of names (None stays None).

    Raises
    ------
    ValueError
        ``value`` is not a non-empty list of distinct, non-empty strings.
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"dataset {dataset!r}: option {option} must be a list of names, e.g. {option}: "
                         f"[{value}], got {value!r}")
    names = tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"dataset {dataset!r}: option {option} must list distinct, non-empty names, got {list(value)}")
    return names


def select_clients(dataset: str, available: Sequence[str], clients: Any, *, where: str = "") -> Tuple[str, ...]:
    """The clients to build: every one of ``available`` when ``clients`` is None, else the named
    ones, in ``available``'s order.

    Parameters
    ----------
    available:
        The dataset's clients (the federation's silos), in silo order.
    where:
        Where they were found (e.g. ``"in /data/root"``), for the error message.

    Raises
    ------
    ValueError
        ``clients`` is not a list of distinct names, or names a client not in ``available``
        (one line listing the valid ones).
    """
    names = name_list(clients, "clients", dataset)
    if names is None:
        return tuple(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"dataset {dataset!r} has no client(s) {unknown}{' ' + where if where else ''}; its clients "
                         f"are {', '.join(available) if available else 'none'}")
    return tuple(c for c in available if c in names)


def fixed_class_names(dataset: str, classes: Sequence[str], class_names: Any, *, hint: str = "") -> Tuple[str, ...]:
    """``classes``, the class list of a dataset whose classes are fixed; ``class_names``, when
    given, must be exactly that list (same names, same order).

    Raises
    ------
    ValueError
        ``class_names`` differs (one line naming the dataset's classes; ``hint`` appended).
    """
    names = name_list(class_names, "class_names", dataset)
    if names is not None and names != tuple(classes):
        raise ValueError(f"dataset {dataset!r} has the classes {list(classes)} (in this order){hint}; class_names "
                         f"{list(names)} differs - give that list or leave class_names out")
    return tuple(classes)


def restrict_federation(federation: Federation, clients: Sequence[str]) -> Federation:
    """The federation of the named clients only (their data shared, not copied), in the
    federation's order; unknown names raise as :func:`select_clients`."""
    keep = select_clients(federation.name, [c.name for c in federation.clients], list(clients))
    return Federation(federation.name, federation.class_names, tuple(c for c in federation.clients if c.name in keep))


def check_selection(dataset: str, federation: Federation, clients: Any, class_names: Any) -> None:
    """Raise ``ValueError`` if ``federation`` does not hold exactly the asked ``clients`` and
    ``class_names`` (a dataset factory that ignored the options)."""
    built = tuple(c.name for c in federation.clients)
    if clients is not None and set(built) != set(clients):
        raise ValueError(f"dataset {dataset!r} built the clients {list(built)} though clients {list(clients)} "
                         "was asked for; its factory must honour the option clients")
    if class_names is not None and federation.class_names != tuple(class_names):
        raise ValueError(f"dataset {dataset!r} built the classes {list(federation.class_names)} though class_names "
                         f"{list(class_names)} was asked for; its factory must honour the option class_names")
