"""Which FedML-section keys a config may hold: the plugin's own, FedML's own, and nothing else.

A key in a FedML section (``train_args``, ``comm_args``, ...) that neither this plugin nor FedML
reads is a typo (``learning_rte``, ``epoch``): :func:`fedml_prr.config.loading.load_config`
refuses it.  A key that FedML knows but this plugin does not use (``frequency_of_the_test``,
``partition_method``) is accepted with a warning naming it.

FedML's own keys are read from the installed FedML itself, without importing it (importing
``fedml`` takes seconds; a config error must not wait for it): the options of its command line
(``fedml/arguments.py``, ``add_args``) and every key of the default configs it ships
(``fedml/**/fedml_config.yaml``: the sp and MPI simulation defaults and the cross-silo client and
server packages).  FedML 0.9.6's arguments module loads any YAML key as an attribute and has no
list of its own, so these files are the nearest thing to one.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from typing import FrozenSet, Optional

#: prefix of ``federated_optimizer`` selecting FedML's own implementation of an algorithm
#: (``FedML:FedAvg``) instead of this plugin's
FEDML_PREFIX = "fedml:"

#: keys FedML 0.9.6 reads from its ``args`` that neither its command line nor its shipped configs list
#: (``tracking_args: log_file_dir``: the folder of its text logs, ``core/mlops/mlops_runtime_log.py``;
#: its job scheduler writes it into ``tracking_args``)
FEDML_UNLISTED_KEYS = frozenset({"log_file_dir"})

_COMMAND_LINE_OPTION = re.compile(r"add_argument\(\s*[\"']--(\w+)[\"']")


def fedml_root() -> Optional[Path]:
    """The installed ``fedml`` package's folder (found without importing it), or None."""
    try:
        spec = importlib.util.find_spec("fedml")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@functools.lru_cache(maxsize=None)
def fedml_own_keys() -> Optional[FrozenSet[str]]:
    """Every key FedML itself defines (see the module docstring); None when FedML is not installed."""
    import yaml

    root = fedml_root()
    if root is None:
        return None
    keys = set(FEDML_UNLISTED_KEYS)
    arguments = root / "arguments.py"
    if arguments.is_file():
        keys.update(_COMMAND_LINE_OPTION.findall(arguments.read_text(errors="replace")))
    for path in sorted(root.rglob("fedml_config.yaml")):
        try:
            document = yaml.safe_load(path.read_text(errors="replace"))
        except yaml.YAMLError:
            continue
        for section in (document or {}).values() if isinstance(document, dict) else ():
            if isinstance(section, dict):
                keys.update(str(k) for k in section)
    return frozenset(keys)
