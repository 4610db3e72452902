"""Bad input through the real command line: every case ends in a one-line error that names the file,
key or client and says what to do, with its exit status, without a traceback, and with an existing
results folder left byte for byte as it was.

One parametrized test per group of cases: inputs that used to end in a traceback, inputs that used
to run anyway (wrongly), and messages that used to be unclear or misleading; then the speed of a
config error (checked without torch or FedML, in a fresh process).
"""

import copy
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dermfake import make_prr4
from PIL import Image

from fedml_prr.cli import main
from fedml_prr.cli.launchers import grpc_federation_main
from fedml_prr.data.layout import prepare_layout

ROOT = Path(__file__).resolve().parents[1]

#: a tiny valid run: 4 synthetic clients of ~20 images, 32 px, 1 round of 1 epoch
BASE = {
    "common_args": {"random_seed": 0},
    "data_args": {"dataset": "derm_synthetic"},
    "model_args": {"model": "vgg16_slim"},
    "train_args": {"federated_optimizer": "FedAvg", "client_num_in_total": 4, "client_num_per_round": 4,
                   "comm_round": 1, "epochs": 1, "batch_size": 16, "learning_rate": 0.03},
    "comm_args": {"backend": "sp"},
    "prr_args": {"prr_image_size": 32, "prr_dataset_options": {"scale": 0.05}, "prr_model_options": {"width": 0.25},
                 "prr_threads": 1, "prr_augment": False},
}


def write_config(path: Path, results: Path, edit=None, text=None) -> Path:
    """``BASE`` (or raw ``text``) with ``prr_results_dir: results``, changed by ``edit(document)``."""
    if text is None:
        document = copy.deepcopy(BASE)
        document["prr_args"]["prr_results_dir"] = str(results)
        if edit is not None:
            edit(document)
        text = yaml.safe_dump(document, sort_keys=False)
    path.write_text(text)
    return path


def snapshot(folder: Path):
    """Every file under ``folder`` and its bytes (folders too, as None)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def run_cli(argv, capsys, runner=main):
    code = runner([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The results folder of a real finished run (config, metrics, summary, checkpoints, resume.pt)."""
    folder = tmp_path_factory.mktemp("finished")
    config = write_config(folder / "run.yaml", folder / "results")
    assert main(["run", "--cf", str(config), "--no-progress"]) == 0
    return folder / "results"


@pytest.fixture
def results(tmp_path, finished_run):
    """A copy of the finished run's results folder: each case points its config at it."""
    return Path(shutil.copytree(finished_run, tmp_path / "results"))


def image_folder(root: Path, layout) -> Path:
    """``<root>/<client>/<split>/<class>/<i>.png`` with ``layout[client][split][class]`` images."""
    for client, splits in layout.items():
        for split in ("train", "valid", "test"):
            (root / client / split).mkdir(parents=True, exist_ok=True)
            for name, count in splits.get(split, {}).items():
                (root / client / split / name).mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    Image.new("RGB", (8, 8), (40 * i % 256, 90, 160)).save(root / client / split / name / f"{i}.png")
    return root


def folder_config(tmp_path, results, layout, batch_size=4):
    root = image_folder(tmp_path / "images", layout)

    def edit(d):
        d["data_args"] = {"dataset": "image_folder"}
        d["train_args"].update(client_num_in_total=None, client_num_per_round=None, batch_size=batch_size)
        d["prr_args"].update(prr_data_root=str(root), prr_dataset_options={})

    return write_config(tmp_path / "folder.yaml", results, edit), root


def even(classes=("a", "b", "c"), n=2):
    return {"train": {c: n for c in classes}, "valid": {c: 1 for c in classes}, "test": {c: 1 for c in classes}}


def assert_clean_error(code, output, expected_code, needles, before, after):
    assert code == expected_code, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("fedml-prr:")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], (needle, output)
    assert after == before


# ------------------------------------------------------------------------------------ tracebacks
def _yaml_syntax(tmp_path, results):
    cf = write_config(tmp_path / "broken.yaml", results, text="common_args:\n  random_seed: [0\n")
    return main, ["run", "--cf", cf], 2, [str(cf), "line 3", "invalid YAML"]


def _missing_yaml_mpirun(tmp_path, results):
    return main, ["mpirun", "-np", "5", "--cf", tmp_path / "nope.yaml"], 2, [str(tmp_path / "nope.yaml"), "does not exist"]


def _missing_yaml_grpc(tmp_path, results):
    return grpc_federation_main, ["--cf", tmp_path / "nope.yaml"], 2, [str(tmp_path / "nope.yaml"), "does not exist"]


def _dataset_option(tmp_path, results):
    cf = write_config(tmp_path / "c.yaml", results, lambda d: d["prr_args"].update(prr_dataset_options={"scal": 0.05}))
    return main, ["run", "--cf", cf], 2, ["prr_dataset_options", "'scal'", "derm_synthetic", "scale"]


def _model_option(tmp_path, results):
    cf = write_config(tmp_path / "c.yaml", results, lambda d: d["prr_args"].update(prr_model_options={"widht": 0.5}))
    return main, ["run", "--cf", cf], 2, ["prr_model_options", "'widht'", "vgg16_slim", "width"]


def _image_too_small(tmp_path, results):
    cf = write_config(tmp_path / "c.yaml", results, lambda d: d["prr_args"].update(prr_image_size=16))
    return main, ["run", "--cf", cf], 2, ["prr_image_size", "vgg16_slim", "at least 32 px", "got 16"]


def _cuda_missing(tmp_path, results):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cf = write_config(tmp_path / "c.yaml", results, lambda d: d["prr_args"].update(prr_device="cuda"))
    return main, ["run", "--cf", cf], 2, ["prr_device", "'cuda'", "CUDA is not available"]


def _results_under_a_file(tmp_path, results):
    (tmp_path / "plain").write_text("a regular file")
    cf = write_config(tmp_path / "c.yaml", tmp_path / "plain" / "run")
    return main, ["run", "--cf", cf], 2, ["prr_results_dir", str(tmp_path / "plain"), "is a file"]


def _results_not_writable(tmp_path, results):
    if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0:
        pytest.skip("root may write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    cf = write_config(tmp_path / "c.yaml", locked / "run")
    return main, ["run", "--cf", cf], 2, ["prr_results_dir", "no permission", str(locked)]


def _truncated_resume(tmp_path, results):
    data = (results / "resume.pt").read_bytes()
    (results / "resume.pt").write_bytes(data[:len(data) // 2])
    cf = write_config(tmp_path / "c.yaml", results)
    return main, ["run", "--cf", cf, "--resume"], 1, [str(results / "resume.pt"), "damaged or truncated", "--overwrite"]


def _random_resume(tmp_path, results):
    (results / "resume.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    cf = write_config(tmp_path / "c.yaml", results)
    return main, ["run", "--cf", cf, "--resume"], 1, [str(results / "resume.pt"), "damaged or truncated"]


def _mpirun_np(np_):
    def case(tmp_path, results):
        cf = write_config(tmp_path / "c.yaml", results)
        return main, ["mpirun", "-np", np_, "--cf", cf], 2, [f"-np {np_}", "4 clients", "-np 5"]
    return case


TRACEBACKS = {"yaml-syntax": _yaml_syntax, "missing-yaml-mpirun": _missing_yaml_mpirun,
              "missing-yaml-grpc-launcher": _missing_yaml_grpc, "unknown-dataset-option": _dataset_option,
              "unknown-model-option": _model_option, "image-size-below-the-model": _image_too_small,
              "cuda-without-cuda": _cuda_missing, "results-dir-under-a-file": _results_under_a_file,
              "results-dir-not-writable": _results_not_writable, "truncated-resume": _truncated_resume,
              "random-bytes-resume": _random_resume, "mpirun-np-3": _mpirun_np(3), "mpirun-np-6": _mpirun_np(6)}


@pytest.mark.parametrize("case", list(TRACEBACKS))
def test_inputs_that_raised_tracebacks_get_one_line(case, tmp_path, results, capsys):
    runner, argv, code, needles = TRACEBACKS[case](tmp_path, results)
    before = snapshot(results)
    assert_clean_error(*run_cli(argv, capsys, runner), code, needles, before, snapshot(results))


# ------------------------------------------------------------------------- runs anyway, wrongly
def _fedml_key_typo(tmp_path, results):
    cf = write_config(tmp_path / "c.yaml", results, lambda d: d["train_args"].update(learning_rte=0.5))
    return ["run", "--cf", cf], 2, ["'learning_rte'", f"train_args of {cf}", "did you mean 'learning_rate'"]


def _fedml_key_typo_set(tmp_path, results):
    cf = write_config(tmp_path / "c.yaml", results)
    return ["run", "--cf", cf, "--set", "epoch=3"], 2, ["'epoch'", "--set", "did you mean 'epochs'"]


def _empty_yaml(tmp_path, results):
    cf = write_config(tmp_path / "empty.yaml", results, text="# nothing yet\n")
    return ["run", "--cf", cf], 2, [str(cf), "holds no key"]


def _class_case(tmp_path, results):
    cf, root = folder_config(tmp_path, results, {"h1": even(("a", "b", "c")), "h2": even(("A", "B", "C"))})
    return ["run", "--cf", cf], 1, ["differ only by case", "'A' (h2) vs 'a' (h1)"]


def _class_disjoint(tmp_path, results):
    cf, root = folder_config(tmp_path, results, {"h1": even(("a", "b")), "h2": even(("a", "b")),
                                                 "h3": even(("x", "y"))})
    return ["run", "--cf", cf], 1, ["client 'h3' shares no class", "['x', 'y']"]


def _class_empty_everywhere(tmp_path, results):
    layout = {"h1": even(("a", "b")), "h2": even(("a", "b"))}
    for client in layout.values():
        client["train"]["c"] = 0
    cf, root = folder_config(tmp_path, results, layout)
    return ["run", "--cf", cf], 1, ["class(es) ['c'] have no training image in any client"]


def _dangling_symlink(tmp_path, results):
    cf, root = folder_config(tmp_path, results, {"h1": even(), "h2": even()})
    link = root / "h2" / "train" / "b" / "9.png"
    link.symlink_to(tmp_path / "gone.png")
    return ["run", "--cf", cf], 1, ["broken symbolic link", str(link)]


def _duplicate_key(tmp_path, results):  # ours: PyYAML keeps the last of two equal keys
    cf = write_config(tmp_path / "c.yaml", results)
    cf.write_text(cf.read_text().replace("  comm_round: 1\n", "  comm_round: 1\n  comm_round: 20\n"))
    return ["run", "--cf", cf], 2, [str(cf), "'comm_round' is given twice"]


def _key_in_two_sections(tmp_path, results):  # ours: FedML flattens the sections, the last one wins
    cf = write_config(tmp_path / "c.yaml", results, lambda d: d["model_args"].update(epochs=5))
    return ["run", "--cf", cf], 2, ["'epochs' is in both model_args and train_args"]


def _batch_of_one(tmp_path, results):  # ours: BatchNorm cannot train on one image
    cf = write_config(tmp_path / "c.yaml", results, lambda d: d["train_args"].update(batch_size=1))
    return ["run", "--cf", cf], 2, ["batch_size is 1", "vgg16_slim", "2 or more"]


RUNS_ANYWAY = {"fedml-key-typo-in-yaml": _fedml_key_typo, "fedml-key-typo-in-set": _fedml_key_typo_set,
               "empty-yaml": _empty_yaml, "class-names-differ-by-case": _class_case,
               "client-shares-no-class": _class_disjoint, "class-empty-in-every-client": _class_empty_everywhere,
               "dangling-image-symlink": _dangling_symlink, "key-given-twice": _duplicate_key,
               "key-in-two-sections": _key_in_two_sections, "batch-size-one": _batch_of_one}


@pytest.mark.parametrize("case", list(RUNS_ANYWAY))
def test_inputs_that_ran_anyway_are_refused(case, tmp_path, results, capsys):
    argv, code, needles = RUNS_ANYWAY[case](tmp_path, results)
    before = snapshot(results)
    assert_clean_error(*run_cli(argv, capsys), code, needles, before, snapshot(results))


def test_fedml_own_keys_we_do_not_use_only_warn(tmp_path, capsys, caplog):
    cf = write_config(tmp_path / "c.yaml", tmp_path / "run",
                      lambda d: d.update(validation_args={"frequency_of_the_test": 5}))
    assert main(["run", "--cf", str(cf), "--no-progress"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("'frequency_of_the_test'" in w and "not read by fedml_prr" in w for w in warnings), warnings
    assert (tmp_path / "run" / "summary.json").is_file()


# ------------------------------------------------------------------------ unclear or misleading
def _resume_without_a_run(tmp_path, results):
    cf = write_config(tmp_path / "c.yaml", tmp_path / "never")
    return ["run", "--cf", cf, "--resume"], 1, ["nothing to resume", str(tmp_path / "never"), "without --resume"]


def _resume_before_a_round(tmp_path, results):  # the folder exists, no round was completed
    for path in list(results.iterdir()):
        if path.name != "config.resolved.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    cf = write_config(tmp_path / "c.yaml", results)
    return ["run", "--cf", cf, "--resume"], 1, ["nothing to resume", str(results / "resume.pt")]


def _resume_without_its_config(tmp_path, results):  # ours: config.resolved.json deleted
    (results / "config.resolved.json").unlink()
    cf = write_config(tmp_path / "c.yaml", results)
    return ["run", "--cf", cf, "--resume"], 1, [str(results), "config.resolved.json is missing"]


def _one_training_image(tmp_path, results):
    layout = {"h1": even(), "h2": even()}
    layout["h2"]["train"] = {"a": 1, "b": 0, "c": 0}
    cf, root = folder_config(tmp_path, results, layout)
    return ["run", "--cf", cf], 1, ["client 'h2'", "1 training image", "at least 2 images"]


def _truncated_cache(name):
    def case(tmp_path, results):
        cache = prepare_layout("derm_prr4", make_prr4(tmp_path / "prr"), tmp_path / "cache", 32)
        data = (cache / name).read_bytes()
        (cache / name).write_bytes(data[:-7])
        cf = write_config(tmp_path / "c.yaml", results, lambda d: (
            d["data_args"].update(dataset="derm_prr4"), d["train_args"].update(batch_size=4),
            d["prr_args"].update(prr_dataset_options={"cache": str(cache)})))
        return ["run", "--cf", cf], 1, [f"cache file {cache / name} is truncated", "fedml-prr prepare derm_prr4"]
    return case


UNCLEAR = {"resume-without-a-run": _resume_without_a_run, "resume-before-a-round": _resume_before_a_round,
           "resume-without-its-config": _resume_without_its_config, "one-training-image": _one_training_image,
           "truncated-images-npy": _truncated_cache("images.npy"),
           "truncated-labels-npy": _truncated_cache("labels.npy")}


@pytest.mark.parametrize("case", list(UNCLEAR))
def test_unclear_messages_name_the_cause(case, tmp_path, results, capsys):
    argv, code, needles = UNCLEAR[case](tmp_path, results)
    before = snapshot(results)
    assert_clean_error(*run_cli(argv, capsys), code, needles, before, snapshot(results))


# ------------------------------------------------------------------ a config error comes at once
PROBE = """
import sys, time
started = time.perf_counter()
from fedml_prr.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'fedml', 'numpy', 'torchvision', 'sklearn'})
print(f"PROBE code={code} heavy={heavy} seconds={time.perf_counter() - started:.2f}")
"""

FAST = {
    "yaml-syntax": ("common_args:\n  random_seed: [0\n", [], "invalid YAML"),
    "unknown-fedml-key": (None, ["--set", "learning_rte=0.5"], "'learning_rte'"),
    "unknown-prr-key": (None, ["--set", "prr_det_a=0.5"], "'prr_det_a'"),
    "wrong-type": (None, ["--set", "comm_round=two"], "comm_round must be an integer"),
    "unknown-algorithm": (None, ["--algorithm", "FedAvgg"], "unknown federated_optimizer 'FedAvgg'"),
    "empty-yaml": ("", [], "holds no key"),
    "results-dir-under-a-file": (None, ["--set", "prr_results_dir=c.yaml/run"], "is a file"),
}


@pytest.mark.parametrize("case", list(FAST))
def test_config_errors_come_within_two_seconds_without_torch_or_fedml(case, tmp_path):
    text, extra, needle = FAST[case]
    cf = write_config(tmp_path / "c.yaml", tmp_path / "run", text=text)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, "run", "--cf", str(cf), *extra], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    elapsed = time.perf_counter() - started
    assert "PROBE code=2 heavy=[]" in proc.stdout, (proc.stdout, proc.stderr)
    assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert elapsed < 2.0, f"{elapsed:.2f} s to report a config error"
    assert not (tmp_path / "run").exists()
