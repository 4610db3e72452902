"""The ``fedml-prr`` argument parser: its commands and their options."""

from __future__ import annotations

import argparse
from typing import Any, List

from ..config import DECLARED, ConfigError

DESCRIPTION = ("fedml-prr: run an algorithm from a FedML YAML and print per-client results, compare algorithms "
               "over seeds, run under MPI or cross-silo over gRPC, or decode a dataset on disk once into a "
               "memory-mapped cache.")

PAPER_HELP = ("the paper's setup of the dataset's task on top of the config (classification: 128 px, VGG16-slim "
              "width 1.0, full-size synthetic clients, 50 rounds x 5 epochs, lr 0.01; segmentation: 256 px, batch 8, "
              "20 rounds x 5 epochs, lr 1e-3); model and dataset options are merged into the config's; --set still "
              "wins (fedml_prr.config.PAPER_SCALE)")


def parse_list(text: str, *, what: str, cast=str) -> List[Any]:
    """``"a, b,"`` -> ``["a", "b"]`` with each item passed through ``cast``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [cast(item) for item in items]
    except ValueError:
        raise ConfigError(f"{what} expects comma-separated {cast.__name__} values, got {text!r}") from None


def mpirun_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``fedml-prr mpirun`` itself (the rest go to ``run``)."""
    parser.add_argument("-np", type=int, dest="np", help="number of processes, K+1 (default: client_num_in_total+1)")
    parser.add_argument("--cf", required=True, help="FedML YAML config with a prr_args section")
    return parser


def _config_arguments(parser: argparse.ArgumentParser, *, every_run: bool = False) -> None:
    parser.add_argument("--cf", required=True, help="FedML YAML config with a prr_args section")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (FedML key or prr_ key)"
                             + (" for every run" if every_run else "") + ", repeatable")
    parser.add_argument("--paper-scale", action="store_true", help=PAPER_HELP)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar" + ("s" if every_run else ""))


def build_parser(*, layout_names: bool = True) -> argparse.ArgumentParser:
    """The whole parser; ``layout_names=False`` leaves the dataset layouts out of ``prepare``'s help
    (listing them imports the data layer, and with it torch: the other commands start without it)."""
    parser = argparse.ArgumentParser(prog="fedml-prr", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level, tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train one algorithm from a FedML YAML and print per-client results")
    _config_arguments(run)
    run.add_argument("--algorithm", help=f"override federated_optimizer ({', '.join(DECLARED.names())})")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last completed round")
    run.add_argument("--overwrite", action="store_true", help="replace an earlier run in the results folder")
    run.add_argument("--role", choices=("server", "client"),
                     help="cross-silo over gRPC: this process's role (addresses in grpc_ipconfig_path)")
    run.add_argument("--rank", type=int, help="cross-silo client rank 1..K (trains silo rank-1); the server is 0")
    run.add_argument("--insecure", action="store_true",
                     help="cross-silo over plain TCP: no TLS, no party identities (a closed test network only)")

    mpirun = sub.add_parser(
        "mpirun", help="run a config under MPI: rank 0 server, ranks 1..K clients (wraps mpirun)",
        description="Launch `mpirun -np NP python -m fedml_prr run --cf CONFIG ...` with the options Open MPI "
                    "needs here (--oversubscribe beyond the core count; root allowed in containers). Other "
                    "options are passed to `run`.")
    mpirun_arguments(mpirun)

    compare = sub.add_parser(
        "compare", help="run every algorithm x seed, then write a table, plots and the best algorithm per metric",
        description="Run each algorithm with each seed (finished runs are skipped, interrupted ones resumed), "
                    "then write table.md, table.csv, the paired differences to a reference algorithm "
                    "(paired.md/.csv/.json, paired.png), the convergence check of every run (convergence.csv/.json), "
                    "the curve, per-client and retrogress figures and summary.txt into the output folder.")
    _config_arguments(compare, every_run=True)
    compare.add_argument("--algorithms", required=True, metavar="A,B,...",
                         help=f"comma-separated algorithms, in table order ({', '.join(DECLARED.names())})")
    compare.add_argument("--seeds", default="0,1,2", metavar="S,S,...",
                         help="comma-separated random seeds (default: 0,1,2)")
    compare.add_argument("--out", help="comparison folder (default: <prr_results_dir of the config>/compare)")
    compare.add_argument("--reference", metavar="NAME",
                         help="the algorithm every other one is compared with seed by seed: paired differences with "
                              "95%% CI and paired t-test in paired.md/.csv/.json and paired.png (default: PRR when "
                              "compared, else the first of --algorithms)")

    diagnose = sub.add_parser(
        "diagnose", help="PRR's diagnosis (DET stages, CPA factor, P_k and D_k around each receive) and the "
                         "retrogress figure from run folders",
        description="For each PRR run folder write diagnosis_<algorithm>.csv and .png (per round and client: DET "
                    "stages, CPA factor, P_k's and D_k's validation score before and after the receive) and print "
                    "a summary per client; runs made with prr_eval_every_epoch: true (e.g. a PRR and a FedAvg run) "
                    "also give retrogress_epochs.png (test metric after every local epoch and each receive).")
    diagnose.add_argument("runs", nargs="+", metavar="RUN_FOLDER", help="results folders (prr_results_dir) of runs")
    diagnose.add_argument("--out", help="folder for the CSV and figures (default: the first run folder)")

    provision = sub.add_parser(
        "provision", help="create a federation CA and one TLS kit per party (key, certificate, CA, config part)",
        description="Create <out>/ca (the CA's key and certificate: keep the key offline) and <out>/<party>/ "
                    "(key.pem, cert.pem, ca.pem, party.yaml) for the server and each client, in rank order. Copy "
                    "each party's folder to its machine only; see docs/security.md.")
    provision.add_argument("--parties", required=True, metavar="server,A,B,...",
                           help="the server's name then the clients' (silo) names, in rank order")
    provision.add_argument("--out", required=True, help="folder for the CA and the kits (must be new or empty)")
    provision.add_argument("--federation", default="fedml-prr", help="the federation's name (in the certificates)")
    provision.add_argument("--days", type=int, default=365, help="certificate validity in days (default: 365)")
    provision.add_argument("--overwrite", action="store_true", help="replace the kits in a non-empty --out")

    sub.add_parser("algorithms", help="list the registered algorithms")
    sub.add_parser("exec", help="run an unmodified FedML main script with this plugin installed "
                                "(fedml-prr exec SCRIPT ARGS)", add_help=False)
    _add_prepare_parser(sub, layout_names)
    return parser


def _add_prepare_parser(sub, layout_names: bool) -> None:
    names = "see docs/datasets.md"
    if layout_names:
        from ..data.layout import LAYOUTS

        names = ", ".join(LAYOUTS.names())
    prepare = sub.add_parser(
        "prepare", help="decode and resize a dataset on disk once into a memory-mapped cache",
        description="Read a dataset layout (docs/datasets.md), decode and resize every image once and write "
                    "images.npy, labels.npy, splits.csv and meta.json into --out. Train from it with "
                    "prr_dataset_options: {cache: OUT} and prr_image_size equal to --size.")
    prepare.add_argument("dataset", help=f"dataset layout ({names})")
    prepare.add_argument("--root", required=True, help="the dataset's folder, as documented in docs/datasets.md")
    prepare.add_argument("--out", required=True, help="cache folder to create (must be new or empty)")
    prepare.add_argument("--size", type=int, default=128, help="square image side in pixels (default: 128)")
    prepare.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="a dataset option (split=lesion, split_seed=1, valid_fraction=0.1, ...), repeatable")
    prepare.add_argument("--workers", type=int, help="decoding threads (default: CPU count, at most 8)")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing cache in --out")
    prepare.add_argument("--no-progress", action="store_true", help="hide the progress bar")
