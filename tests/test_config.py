"""Config validation at the edge: typed, unknown prr_ keys refused with the valid ones named."""

from pathlib import Path

import pytest

from fedml_prr.api import make_config, read_yaml
from fedml_prr.config import parse_assignments
from fedml_prr.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_loads():
    cfg = make_config(ROOT / "configs" / "prr_derm_synthetic.yaml")
    assert cfg.algorithm == "PRR" and cfg.dataset == "derm_synthetic"
    assert cfg.schedule.rounds == 12 and cfg.schedule.epochs == 2
    assert cfg.options.image_size == 32 and cfg.options.model_options == {"width": 0.5}
    assert cfg.algorithm_params.cpa_init_rounds == 4
    assert cfg.algorithm_params.pfa_ratio_start == 0.7  # defaults of the spec


def test_unknown_prr_key_names_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown prr_args key\(s\) \['prr_pfa_ratio_strat'\].*prr_pfa_ratio_start"):
        make_config({"prr_args": {"prr_pfa_ratio_strat": 0.5}})


def test_ill_typed_keys_are_errors():
    with pytest.raises(ConfigError, match="prr_det_a1 must be a number"):
        make_config({"prr_args": {"prr_det_a1": "high"}})
    with pytest.raises(ConfigError, match="comm_round must be an integer"):
        make_config({"train_args": {"comm_round": 2.5}})
    with pytest.raises(ConfigError, match="prr_pfa_share_phase must be true or false"):
        make_config({"prr_args": {"prr_pfa_share_phase": "yes"}})


def test_range_checks():
    with pytest.raises(ConfigError, match="prr_det_a1 <= prr_det_a2"):
        make_config({"prr_args": {"prr_det_a1": 0.95, "prr_det_a2": 0.9}})
    with pytest.raises(ConfigError, match="prr_det_stage_estimate"):
        make_config({"prr_args": {"prr_det_stage_estimate": "guess"}})
    with pytest.raises(ConfigError, match="client_num_per_round"):
        make_config({"train_args": {"client_num_in_total": 4, "client_num_per_round": 6}})


def test_prr_key_outside_prr_args_is_refused():
    with pytest.raises(ConfigError, match="belongs in the prr_args section"):
        make_config({"train_args": {"prr_det_a1": 0.5}})


def test_unknown_algorithm_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known algorithms: .*FedAvg.*PRR"):
        make_config({"train_args": {"federated_optimizer": "FedMagic"}})


def test_overrides_and_algorithm_flag():
    sets = parse_assignments(["comm_round=3", "prr_det_a1=0.5", "prr_model_options={width: 0.25}"])
    cfg = make_config(ROOT / "configs" / "prr_derm_synthetic.yaml", algorithm="fedavg", overrides=sets)
    assert cfg.algorithm == "FedAvg" and cfg.schedule.rounds == 3
    assert cfg.algorithm_params.__class__.__name__ == "FedAvgParams"
    assert cfg.options.model_options == {"width": 0.25}
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["comm_round"])


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_yaml(tmp_path / "nope.yaml")


def test_every_key_is_documented():

    from fedml_prr.algorithms import ALGORITHMS
    from fedml_prr.config import EngineOptions, RunOptions, field_keys

    doc = (ROOT / "docs" / "configuration.md").read_text()
    keys = set(field_keys(RunOptions)) | set(field_keys(EngineOptions)) | {"prr_data_root", "prr_lr_decay_every",
                                                                         "prr_lr_decay_factor"}
    for name in ALGORITHMS.names():
        keys |= set(field_keys(ALGORITHMS.get(name).params))
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert missing == []


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
@pytest.mark.parametrize("paper_scale", [False, True], ids=["as-is", "paper-scale"])
def test_every_shipped_config_loads_with_and_without_paper_scale(path, paper_scale):
    from fedml_prr.data import dataset_task
    from fedml_prr.data.datasets import accepted_options
    from fedml_prr.models import build_model, check_image_size, model_options

    cfg = make_config(path, paper_scale=paper_scale)
    yaml_options = make_config(path).options
    # the model and the dataset accept every option the config gives them
    assert set(cfg.options.model_options) <= set(model_options(cfg.model)), cfg.options.model_options
    assert set(cfg.options.dataset_options) <= set(accepted_options(cfg.dataset)), cfg.options.dataset_options
    build_model(cfg.model, num_classes=3, **cfg.options.model_options)
    check_image_size(cfg.model, cfg.options.image_size, **cfg.options.model_options)
    # paper scale merges into the config's options: nothing the YAML set is lost
    for key, value in yaml_options.dataset_options.items():
        if key != "scale":
            assert cfg.options.dataset_options[key] == value
    for key, value in yaml_options.model_options.items():
        if key != "width":
            assert cfg.options.model_options[key] == value
    if paper_scale:
        task = dataset_task(cfg.dataset)
        assert (cfg.schedule.rounds, cfg.schedule.epochs) == ((50, 5) if task == "classification" else (20, 5))
        assert cfg.options.image_size == (128 if task == "classification" else 256)
        if cfg.model == "vgg16_slim":
            assert cfg.options.model_options["width"] == 1.0
        if cfg.dataset == "derm_synthetic":
            assert cfg.options.dataset_options["scale"] == 1.0


def test_paper_scale_keeps_a_cache_option_and_set_still_wins():
    cfg = make_config(ROOT / "configs" / "prr_derm_prr4.yaml", paper_scale=True,
                      overrides={"comm_round": 7})
    assert cfg.options.dataset_options == {"cache": "data/cache/derm_prr4_128"}
    assert cfg.schedule.rounds == 7 and cfg.schedule.epochs == 5


def test_every_declared_algorithm_is_registered_with_its_declaration():
    from fedml_prr.algorithms import ALGORITHMS, register_algorithm
    from fedml_prr.config import DECLARED

    assert ALGORITHMS.names() == DECLARED.names()
    for name in DECLARED.names():
        spec, declared = ALGORITHMS.get(name), DECLARED.get(name)
        assert (spec.params, spec.summary, dict(spec.task_defaults)) == \
            (declared.params, declared.summary, dict(declared.task_defaults))
    spec = ALGORITHMS.get("FedAvg")
    with pytest.raises(ValueError, match="declared in fedml_prr.config.algorithms; its params"):
        register_algorithm("FedAvg", client=spec.client, server=spec.server, params=DECLARED.get("FedProx").params)
    with pytest.raises(ValueError, match="give params"):
        register_algorithm("NotDeclared", client=spec.client, server=spec.server)


def test_fedml_own_keys_come_from_the_installed_fedml():
    from fedml_prr.config.fedml_keys import fedml_own_keys

    known = fedml_own_keys()
    assert known is not None  # FedML is a dependency of the project
    # its shipped default configs and its command line (fedml/arguments.py)
    assert {"frequency_of_the_test", "partition_method", "gpu_mapping_file", "run_id", "rank"} <= known
    assert not {"epoch", "learning_rte"} & known
