"""Party identities of a federation: rank 0 is the server, rank ``k`` (1..K) the client of silo ``k - 1``.

A party proves its identity with a certificate whose common name and DNS name are
:func:`party_name` of its rank (issued by ``fedml-prr provision``); the transport checks the name
against the rank a message claims (:mod:`fedml_prr.fedml_adapter.grpc_link`).
"""

from __future__ import annotations

from typing import Optional

_PREFIX = "fedml-prr-rank-"


def party_name(rank: int) -> str:
    """The identity of rank ``rank`` (certificate common name and DNS name)."""
    return f"{_PREFIX}{int(rank)}"


def rank_of(name: str) -> Optional[int]:
    """Inverse of :func:`party_name` (None for any other name)."""
    if not name.startswith(_PREFIX) or not name[len(_PREFIX):].isdigit():
        return None
    return int(name[len(_PREFIX):])


def role(rank: int) -> str:
    """How logs and errors name a party."""
    return "the server" if rank == 0 else f"client rank {rank} (silo {rank - 1})"
