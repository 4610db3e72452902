"""FedML initialisation with no network attempt at all.

``fedml.init()`` calls ``fedml.core.mlops.fetch_config``, which tries the vendor's cloud five
times with no timeout, and, outside simulation, ``collect_env()`` probes the network.  We pass
``check_env=False`` and swap ``fetch_config`` for a local no-op during the call (FedML 0.9.6 is
frozen upstream; its files are never edited).  Tracking stays off.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

logger = logging.getLogger(__name__)

#: FedML keys forced off: each would reach the vendor's cloud or wandb.
OFFLINE_KEYS: Dict[str, Any] = {"enable_wandb": False, "using_mlops": False, "enable_tracking": False,
                                "sys_perf_profiling": False}


def fedml_args(fedml_keys: Mapping[str, Any], *, rank: int = 0, role: str = "server", **extra: Any):
    """A FedML ``Arguments`` object holding ``fedml_keys`` (already flattened) plus run identity.

    Built without FedML's own argv/YAML parsing, which would read ``sys.argv``.
    """
    from fedml.arguments import Arguments

    args = Arguments.__new__(Arguments)
    values = {"training_type": "simulation", "backend": "sp", "random_seed": 0, "run_id": "0",
              "rank": rank, "local_rank": 0, "node_rank": 0, "role": role, "run_device_id": "0",
              "config_version": "release", "yaml_config_file": ""}
    values.update(fedml_keys)
    values.update(OFFLINE_KEYS)
    values.update(extra)
    for key, value in values.items():
        setattr(args, key, value)
    if not hasattr(args, "worker_num") and hasattr(args, "client_num_per_round"):
        args.worker_num = args.client_num_per_round
    return args


@contextlib.contextmanager
def _no_cloud_config() -> Iterator[None]:
    import fedml.core.mlops as mlops

    original = mlops.fetch_config

    def offline_fetch_config(args, version="release"):  # FedML 0.9.6 workaround: never dial out
        setattr(args, "config_version", version)
        logger.debug("fedml fetch_config skipped (offline)")

    mlops.fetch_config = offline_fetch_config
    try:
        yield
    finally:
        mlops.fetch_config = original


def init_fedml_offline(args: Optional[Any] = None, *, init: Optional[Callable] = None):
    """``fedml.init(args)`` without any network attempt; returns FedML's args.

    ``init``: FedML's original ``fedml.init`` when :func:`fedml_prr.install` has replaced it.
    """
    import fedml

    printed = io.StringIO()
    with _no_cloud_config(), contextlib.redirect_stdout(printed):  # fedml.init prints its args to stdout
        args = (init or fedml.init)(args, check_env=False, should_init_logs=False)
    logger.debug("fedml.init printed: %s", printed.getvalue())
    return args
