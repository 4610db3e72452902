"""Runtimes: every silo in one process (:mod:`.sp`), one process per party under MPI or over gRPC
(:mod:`.distributed`), the gRPC address book (:mod:`.parties`), a local launcher of a whole
gRPC federation (:mod:`.launch`) and whether this process runs under mpirun (:mod:`.mpi`)."""
