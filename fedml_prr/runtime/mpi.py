"""Whether this process was started by ``mpirun``: a light module (no torch, no FedML), so that the
command line can tell before any heavy import."""

from __future__ import annotations

import os

#: environment variables Open MPI, MPICH and PMIx set in every rank they start
MPI_ENVIRONMENT = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")


def mpi_world():
    """``(comm, rank, size)`` of ``MPI.COMM_WORLD`` when this process was started by mpirun, else None."""
    if not any(k in os.environ for k in MPI_ENVIRONMENT):
        return None
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    return (comm, comm.Get_rank(), comm.Get_size()) if comm.Get_size() > 1 else None
