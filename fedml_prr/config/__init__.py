"""The one typed, validated configuration object of a run.

A FedML YAML with a ``prr_args`` section is read once, at the edge, into a frozen
:class:`RunConfig` (:func:`load_config`); nothing below the edge reads FedML's ``args``.
Modules: :mod:`.schema` (the dataclasses), :mod:`.loading` (YAML document -> RunConfig, ``--set``
parsing), :mod:`.presets` (``--paper-scale``).
"""

from .loading import FEDML_KEYS, build_dataclass, field_keys, flatten_sections, load_config, parse_assignments
from .presets import MERGED_OPTION_KEYS, PAPER_SCALE, paper_scale_preset
from .schema import COMPILE_MODES, CONV_MODES, ENGINES, ConfigError, EngineOptions, RunConfig, RunOptions, TrainSchedule

__all__ = ["COMPILE_MODES", "CONV_MODES", "ConfigError", "ENGINES", "EngineOptions", "FEDML_KEYS", "MERGED_OPTION_KEYS",
           "PAPER_SCALE", "RunConfig", "RunOptions", "TrainSchedule", "build_dataclass", "field_keys",
           "flatten_sections", "load_config", "paper_scale_preset", "parse_assignments"]
