"""A tiny name -> object registry shared by algorithms, datasets and models.

Adding an entry is one decorator line; looking up an unknown name raises a ``KeyError`` that
lists every known name, so a typo in a config is fixed in one step.  :func:`check_options`
gives registered entries the same one-step error for an unknown option.
"""

from __future__ import annotations

from typing import Callable, Dict, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Case-insensitive mapping from a public name to a registered object.

    Parameters
    ----------
    kind:
        What the registry holds ("model", "dataset", "algorithm"); used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}
        self._display: Dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is an error."""

        def decorator(obj: T) -> T:
            key = name.lower()
            if key in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[key] = obj
            self._display[key] = name
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the entry for ``name``; raise ``KeyError`` naming the known entries."""
        try:
            return self._entries[str(name).lower()]
        except KeyError:
            known = ", ".join(self.names())
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def canonical_name(self, name: str) -> str:
        """The name as it was registered (``fedavg`` -> ``FedAvg``)."""
        self.get(name)
        return self._display[str(name).lower()]

    def names(self) -> list[str]:
        return sorted(self._display.values(), key=str.lower)

    def registration_order(self) -> list[str]:
        """The names in the order they were registered (``names`` sorts them)."""
        return list(self._display.values())

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


class UnknownOptionError(ValueError, TypeError):
    """An option a registered dataset or model does not accept (:attr:`kind`: ``"dataset"`` or
    ``"model"``).

    A ``ValueError``; also a ``TypeError``, which is what passing the option straight to the
    factory raised before options were checked, so older ``except TypeError`` still catch it.
    """

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind


def check_options(kind: str, name: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise :class:`UnknownOptionError` (one line: the entry, the bad keys, the valid options)
    if ``given`` holds a key not in ``valid``."""
    valid = list(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise UnknownOptionError(f"unknown option(s) {unknown} of {kind} {name!r}; its options are "
                                 f"{', '.join(valid) if valid else 'none'}", kind)
