"""Presets applied on top of a config: ``--paper-scale``."""

from __future__ import annotations

from typing import Any, Dict

#: option mappings that presets merge into instead of replacing
MERGED_OPTION_KEYS = ("prr_model_options", "prr_dataset_options")

#: ``--paper-scale``: the paper's setup of each task (PRR_METHOD.md sections 4 and 5) on top of
#: any config: plain keys replace the config's; ``model_options`` / ``dataset_options`` are merged
#: into the config's options, and only for the models / datasets named here (the others take none).
PAPER_SCALE: Dict[str, Dict[str, Any]] = {
    "classification": {
        "keys": {"prr_image_size": 128, "comm_round": 50, "epochs": 5, "batch_size": 16, "learning_rate": 0.01,
                 "prr_lr_decay_every": 5, "prr_cpa_init_rounds": 15, "prr_fedrep_head_epochs": 10},
        "model_options": {"vgg16_slim": {"width": 1.0}},
        "dataset_options": {"derm_synthetic": {"scale": 1.0}},
    },
    "segmentation": {
        "keys": {"prr_image_size": 256, "comm_round": 20, "epochs": 5, "batch_size": 8, "learning_rate": 1e-3,
                 "prr_lr_decay_every": 5},
        "model_options": {},
        "dataset_options": {},
    },
}


def paper_scale_preset(task: str, *, dataset: str, model: str) -> Dict[str, Any]:
    """The ``--paper-scale`` keys of ``task`` for this dataset and model (see :data:`PAPER_SCALE`)."""
    preset = PAPER_SCALE[task]
    keys = dict(preset["keys"])
    for key, by_name, name in (("prr_model_options", preset["model_options"], model),
                               ("prr_dataset_options", preset["dataset_options"], dataset)):
        options = by_name.get(str(name).lower())
        if options:
            keys[key] = dict(options)
    return keys
