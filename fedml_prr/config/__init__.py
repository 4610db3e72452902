"""The one typed, validated configuration object of a run.

A FedML YAML with a ``prr_args`` section is read once, at the edge, into a frozen
:class:`RunConfig` (:func:`load_config`); nothing below the edge reads FedML's ``args``.
Modules: :mod:`.schema` (the dataclasses), :mod:`.loading` (YAML file -> document -> RunConfig,
``--set`` parsing), :mod:`.presets` (``--paper-scale``), :mod:`.algorithms` (every algorithm's
hyper-parameters), :mod:`.fedml_keys` (FedML's own keys).  Nothing here imports torch or FedML, so
a config is checked in a fraction of a second.
"""

from .algorithms import DECLARED, declared_params
from .fedml_keys import FEDML_PREFIX
from .loading import (FEDML_KEYS, build_dataclass, field_keys, flatten_sections, load_config, parse_assignments,
                      read_config_file)
from .presets import MERGED_OPTION_KEYS, PAPER_SCALE, paper_scale_preset
from .schema import (COMPILE_MODES, CONV_MODES, ENGINES, TRACKING_KEYS, ConfigError, EngineOptions, FederationOptions,
                     RunConfig, RunOptions, TrainSchedule)

__all__ = ["COMPILE_MODES", "CONV_MODES", "ConfigError", "DECLARED", "ENGINES", "EngineOptions", "FEDML_KEYS",
           "FEDML_PREFIX", "FederationOptions", "MERGED_OPTION_KEYS", "PAPER_SCALE", "RunConfig", "RunOptions",
           "TRACKING_KEYS", "TrainSchedule", "build_dataclass", "declared_params", "field_keys", "flatten_sections",
           "load_config", "paper_scale_preset", "parse_assignments", "read_config_file"]
