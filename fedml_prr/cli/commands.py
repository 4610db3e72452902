"""The ``fedml-prr`` commands that work in this process: run, compare, prepare, algorithms.

A command first checks its config without torch or FedML (:func:`.checks.check_config`: the YAML,
every key's name, type and range, the results folder), so that a config error appears at once; only
then does it import the heavy layers, check the config against the dataset and model registries
(:func:`fedml_prr.api.make_config`) and run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..config import DECLARED, ConfigError, flatten_sections, parse_assignments, read_config_file
from .checks import CONFIG_ERRORS, RUN_ERRORS, check_config, config_error, native_algorithm
from .parser import parse_list
from .tables import fail, print_result

def run_command(args: argparse.Namespace) -> int:
    """``fedml-prr run``: one process, or one party of an MPI / gRPC run."""
    from ..runtime.mpi import mpi_world

    try:
        document = read_config_file(args.cf)  # read once for the whole command
        overrides = parse_assignments(args.set)
        if args.insecure:
            overrides["prr_insecure"] = True
        native = native_algorithm(args.algorithm or overrides.get("federated_optimizer")
                                  or flatten_sections(document)[0].get("federated_optimizer"))
        check_config(document, overrides, algorithm=native or args.algorithm, warn_unused_fedml_keys=not native,
                     name=args.cf)
        if args.resume and args.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")
    except CONFIG_ERRORS as exc:
        return config_error(exc)
    world = mpi_world()
    if native and world is None:
        return fail(f"config error: FedML:{native} is FedML's own MPI simulation; launch it with "
                    f"`fedml-prr mpirun -np K+1 --cf {args.cf} --algorithm FedML:{native}`", 2)
    from ..api import make_config, run

    try:
        config = make_config(document, name=args.cf, algorithm=native or args.algorithm, overrides=overrides,
                             paper_scale=args.paper_scale, warn_unused_fedml_keys=False)
    except CONFIG_ERRORS as exc:
        return config_error(exc)
    if world is not None or args.role is not None:
        from .launchers import run_party_process

        return run_party_process(args, config, world, native)
    try:
        result = run(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except ConfigError as exc:
        return config_error(exc)
    except RUN_ERRORS as exc:
        if args.verbose:
            raise
        return fail(f"error: {exc} (run with -v for the traceback)")
    print_result(result)
    return 0


def check_compare_configs(path: str, overrides: Mapping[str, Any], algorithms: Sequence[str]) -> None:
    """:func:`check_config` for every algorithm of a comparison (its seeds change no key's validity)."""
    for algorithm in algorithms:
        check_config(path, overrides, algorithm=algorithm)


def check_reference(reference: Optional[str], algorithms: Sequence[str]) -> None:
    """``--reference`` names one of ``--algorithms`` (any case; without torch: the declared names)."""
    if reference is None:
        return
    canonical = {DECLARED.canonical_name(a) if a in DECLARED else a for a in algorithms}
    if (DECLARED.canonical_name(reference) if reference in DECLARED else reference) not in canonical:
        raise ConfigError(f"--reference {reference} is not one of --algorithms ({', '.join(algorithms)})")


def compare_command(args: argparse.Namespace) -> int:
    """``fedml-prr compare``: the algorithm x seed matrix, its tables and figures."""
    try:
        algorithms = parse_list(args.algorithms, what="--algorithms")
        seeds = parse_list(args.seeds, what="--seeds", cast=int)
        overrides = parse_assignments(args.set)
        check_compare_configs(args.cf, overrides, algorithms)
        check_reference(args.reference, algorithms)
    except CONFIG_ERRORS as exc:
        return config_error(exc)
    from ..compare import compare

    try:
        report = compare(args.cf, algorithms, seeds, overrides=overrides, paper_scale=args.paper_scale,
                         out=args.out, progress=not args.no_progress, reference=args.reference)
    except (ConfigError, KeyError) as exc:
        return config_error(exc)
    except RUN_ERRORS as exc:
        if args.verbose:
            raise
        return fail(f"error: {exc} (run with -v for the traceback)")
    print(report.table_markdown)
    print(report.best_text, end="")  # it ends with the convergence check: a warning per run not flattened
    print(f"comparison written to {report.out}/ ({', '.join(p.name for p in report.files)}; runs/ holds each run)")
    return 0


def prepare_command(args: argparse.Namespace) -> int:
    """``fedml-prr prepare``: decode a dataset layout once into a memory-mapped cache."""
    from tqdm.auto import tqdm

    from ..data.cache import load_cache
    from ..data.layout import prepare_layout

    bar = None

    def start_bar(manifest) -> None:
        nonlocal bar
        if not args.no_progress:
            bar = tqdm(total=len(manifest.records), desc=f"prepare {manifest.dataset}", unit="img")

    started = time.perf_counter()
    try:
        options = parse_assignments(args.option)
        out = prepare_layout(args.dataset, args.root, args.out, args.size, workers=args.workers,
                             overwrite=args.overwrite, on_manifest=start_bar,
                             progress=lambda n: bar.update(n) if bar is not None else None, **options)
    except (ConfigError, KeyError, FileNotFoundError, FileExistsError, ValueError, OSError) as exc:
        if args.verbose:
            raise
        return fail(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}")
    finally:
        if bar is not None:
            bar.close()
    federation = load_cache(out)
    n = sum(len(c.split(s)) for c in federation.clients for s in ("train", "valid", "test"))
    print(federation.describe())
    print(f"cache written to {out}/ ({n} images, {time.perf_counter() - started:.1f} s); train from it with "
          f"prr_dataset_options: {{cache: {out}}} and prr_image_size: {args.size}")
    return 0


def provision_command(args: argparse.Namespace) -> int:
    """``fedml-prr provision``: a federation CA and one TLS kit per party."""
    from ..runtime.provision import provision

    try:
        parties = parse_list(args.parties, what="--parties")
        kits = provision(Path(args.out), parties, federation=args.federation, days=args.days, overwrite=args.overwrite)
    except (ConfigError, FileExistsError, ValueError) as exc:
        return fail(f"error: {exc}")
    for kit, name in zip(kits, parties):
        print(f"rank {kit.rank:<3} {name:<16} {kit.folder}/ (key.pem, cert.pem, ca.pem, party.yaml)")
    print(f"CA in {Path(args.out) / 'ca'}/: keep ca.key offline; copy each party's folder to its machine only")
    return 0


def diagnose_command(args: argparse.Namespace) -> int:
    """``fedml-prr diagnose``: PRR's diagnosis and the retrogress figure from run folders."""
    from ..compare.diagnosis_report import diagnose

    try:
        report = diagnose(args.runs, args.out)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        if args.verbose:
            raise
        return fail(f"error: {exc}")
    print(report.text)
    print(f"diagnosis written to {report.out}/ ({', '.join(p.name for p in report.files) or 'no file'})")
    return 0


def algorithms_command(args: Optional[argparse.Namespace] = None) -> int:
    """``fedml-prr algorithms``: every algorithm and its one-line summary (from the declarations,
    :mod:`fedml_prr.config.algorithms`: no torch needed)."""
    for name in DECLARED.names():
        print(f"{name:<10} {DECLARED.get(name).summary}")
    return 0


COMMANDS: Mapping[str, Any] = {"run": run_command, "compare": compare_command, "prepare": prepare_command,
                               "provision": provision_command, "algorithms": algorithms_command,
                               "diagnose": diagnose_command}
