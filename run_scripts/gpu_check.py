#!/usr/bin/env python
"""One prepared check of the CUDA path for a short loan of one GPU (docs/performance.md, "GPU check").

From the repository root, on a bare machine with torch (no install step: the package and the
checks are imported from this working tree)::

    python run_scripts/gpu_check.py --out $OUT/gpu_check       # on one GPU; parts budgeted at 450 s
    python run_scripts/gpu_check.py --device cpu --smoke        # the same script, tiny, on a CPU

Four parts, each in its own process with a hard time budget (``--budget PART=SECONDS``), so a
slow part is killed and the next one still runs; whatever a part measured before it ended is
kept:

1. ``checks``: tests/device_checks.py - every registered algorithm one round on the device vs
   the CPU, grouped vs per-slot convolutions, bf16 autocast trains, the batched engine's step
   never waits for the device (sync debug mode, profiler);
2. ``engine``: PRR local epochs at the paper's size (4 clients of 2091/2708/1144/1400 images,
   128 px, VGG16-slim width 1.0, batch 16, faithful stage check) for the loop, batched and
   batched-bf16 engines (run_scripts/benchmark_engine.py's :func:`measure_epochs`), with TFLOP/s;
3. ``prr``: the paper's 50 x 5 PRR run on that workload (valid and test splits of the paper's
   size too), timed per round until it ends or its budget does; the whole run's wall time is
   extrapolated from the rounds done;
4. ``compile``: the batched-bf16 engine with ``prr_compile: true`` at the paper's size
   (compilation time and epoch time), then compiled vs eager on the tiny federation.  Skipped on
   the CPU (:data:`COMPILE_ON_CPU`).

Writes ``OUT/summary.json`` (updated after every part) and each part's log ``OUT/<part>.log``,
and prints a short table.  Exit status 0 when every part finished and every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "tests", ROOT):  # the package from this working tree, no install; the shared checks
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

PARTS = ("checks", "engine", "prr", "compile")
BUDGETS = {"checks": 90, "engine": 130, "prr": 120, "compile": 90}  # seconds; 430 s in all
TOTAL_BUDGET = 450  # seconds for every part together (the loan: one GPU for about 15 minutes)
PAPER_ROUNDS, PAPER_EPOCHS = 50, 5
TARGET_RUN_S = 300  # the target for the whole 50 x 5 run on one H100/H200
ENGINE_VARIANTS = ("loop", "batched", "batched-bf16")
PRR_VARIANT = "batched-bf16"
COMPILE_VARIANT = "batched-bf16-compile"
#: the tiny CPU stand-in of --smoke: 4 clients, 32 px, VGG16-slim width 0.25
SMOKE = {"sizes": (24, 32, 16, 20), "eval_sizes": ((8,) * 4, (8,) * 4), "image_size": 32, "width": 0.25,
         "rounds": 2, "repeats": 1}
#: why the compile part does not run on a CPU
COMPILE_ON_CPU = ("torch.compile on a CPU takes minutes per shape (and its CPU code generation got this model's "
                  "gradients wrong in our runs, docs/performance.md); the compile part runs on a GPU only, "
                  "tests/test_batched.py checks the traced forward on the CPU")


# --------------------------------------------------------------------------- parts (child processes)
def workload(args):
    from benchmark_engine import PAPER_TRAIN_SIZES, Workload

    if args.smoke:
        return Workload(sizes=SMOKE["sizes"], image_size=SMOKE["image_size"], width=SMOKE["width"], device=args.device)
    return Workload(sizes=PAPER_TRAIN_SIZES, device=args.device, compile_mode=args.compile_mode)


def part_checks(args, save: Callable[[Dict[str, Any]], None], scratch: Path) -> bool:
    import device_checks

    results: Dict[str, Any] = {}
    for name, check in device_checks.CHECKS.items():
        kwargs = {"algorithms": device_checks.SMOKE_ALGORITHMS} if args.smoke and name == "algorithms_match_cpu" else {}
        results[name] = _run_check(check, args.device, scratch / name, **kwargs)
        save(results)
    return all(r["status"] == "passed" for r in results.values())


def _run_check(check: Callable[..., Dict[str, Any]], device: str, scratch: Path, **kwargs: Any) -> Dict[str, Any]:
    start = time.perf_counter()
    try:
        outcome = {"status": "passed", "figures": check(device, scratch, **kwargs)}
    except AssertionError as error:
        outcome = {"status": "failed", "error": str(error)}
    except Exception as error:  # an error is a finding too: keep it and go on with the next check
        outcome = {"status": "error", "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    outcome["seconds"] = time.perf_counter() - start
    print(f"check {check.__name__}: {outcome['status']} in {outcome['seconds']:.1f} s", flush=True)
    return outcome


def part_engine(args, save, scratch: Path) -> bool:
    from benchmark_engine import measure_epochs

    measure_epochs(workload(args), ENGINE_VARIANTS, repeats=SMOKE["repeats"] if args.smoke else args.repeats,
                   interleave=False, on_update=save, log=lambda line: print(line, flush=True))
    return True


def part_prr(args, save, scratch: Path) -> bool:
    from benchmark_engine import PAPER_SIZES, synthetic_federation
    from fedml_prr.runtime.sp import run_single_process

    load = workload(args)
    rounds = SMOKE["rounds"] if args.smoke else PAPER_ROUNDS
    eval_sizes = SMOKE["eval_sizes"] if args.smoke else (PAPER_SIZES["valid"], PAPER_SIZES["test"])
    federation = synthetic_federation(load.sizes, load.image_size, eval_sizes=eval_sizes)
    config = load.config(PRR_VARIANT, PAPER_EPOCHS, rounds, str(scratch / "run"))
    result: Dict[str, Any] = {"variant": PRR_VARIANT, "rounds": rounds, "epochs": PAPER_EPOCHS,
                              "sizes": {"train": list(load.sizes), "valid": list(eval_sizes[0]), "test": list(eval_sizes[1])},
                              "round_end_s": []}
    start = time.perf_counter()
    done = threading.Event()
    watcher = threading.Thread(target=_watch_rounds, args=(scratch / "run" / "metrics.jsonl", len(load.sizes), start,
                                                           result, save, done), daemon=True)
    watcher.start()
    run = run_single_process(config, federation, overwrite=True)
    done.set()
    watcher.join()
    result.update(wall_s=time.perf_counter() - start, run_wall_time_s=run.summary["wall_time_s"], finished=True)
    save(result)
    return True


def _watch_rounds(metrics: Path, clients: int, start: float, result: Dict[str, Any], save, done: threading.Event) -> None:
    """Note when each round's records land in ``metrics.jsonl`` (one line per client)."""
    while True:
        finished = done.wait(0.1)
        try:
            lines = metrics.read_text().count("\n")
        except OSError:  # not written yet
            lines = 0
        while len(result["round_end_s"]) < lines // clients:
            result["round_end_s"].append(time.perf_counter() - start)
            print(f"round {len(result['round_end_s']) - 1} done at {result['round_end_s'][-1]:.1f} s", flush=True)
            save(result)
        if finished:
            return


def part_compile(args, save, scratch: Path) -> bool:
    import device_checks
    from benchmark_engine import measure_epochs

    from torch._dynamo.utils import counters

    result: Dict[str, Any] = {"mode": args.compile_mode, "progress": []}
    start, lock, done = time.perf_counter(), threading.Lock(), threading.Event()

    def keep(epochs: Dict[str, Any]) -> None:
        with lock:
            result["epochs"] = epochs
            save(result)

    def watch() -> None:  # compiling can outlast the budget: note how far it got
        while not done.wait(5.0):
            with lock:
                result["progress"].append({"elapsed_s": round(time.perf_counter() - start, 1),
                                           "graphs_compiled": counters["stats"]["unique_graphs"]})
                save(result)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    measure_epochs(workload(args), (COMPILE_VARIANT,), repeats=args.repeats, interleave=False, on_update=keep,
                   log=lambda line: print(line, flush=True))
    done.set()
    watcher.join()
    result["matches_eager"] = _run_check(device_checks.check_compile_matches_eager, args.device, scratch / "eager")
    save(result)
    return result["matches_eager"]["status"] == "passed"


PART_FUNCTIONS = {"checks": part_checks, "engine": part_engine, "prr": part_prr, "compile": part_compile}


def run_part(args) -> int:
    """Child process: run one part, saving its JSON after every step."""
    from fedml_prr.files import atomic_write_text

    target = Path(args.out) / f"{args.part}.json"

    def save(data: Dict[str, Any]) -> None:
        atomic_write_text(target, json.dumps(data, indent=2, default=str))

    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{args.part}_") as scratch:
        ok = PART_FUNCTIONS[args.part](args, save, Path(scratch))
    return 0 if ok else 1


# --------------------------------------------------------------------------- orchestration
def environment(device: str) -> Dict[str, Any]:
    from importlib.metadata import version

    import fedml_prr

    env = {"python": platform.python_version(), "torch": version("torch"), "cpu_count": os.cpu_count(),
           "device": device, "commit": _git_commit(), "package": str(Path(fedml_prr.__file__).parent)}
    if device.startswith("cuda"):  # the parts import torch; here only for the card's description
        import torch

        props = torch.cuda.get_device_properties(device)
        env["torch"] = torch.__version__
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


def _git_commit() -> Any:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None  # the copied working tree may come without git


def launch(args, part: str, timeout: float) -> Dict[str, Any]:
    """Run ``part`` in a child process (its own session, killed whole at ``timeout``)."""
    out = Path(args.out)
    (out / f"{part}.json").unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--device", args.device,
               "--out", str(out), "--repeats", str(args.repeats), "--compile-mode", args.compile_mode]
    command += ["--smoke"] if args.smoke else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    with open(out / f"{part}.log", "w") as log:
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            code = child.wait(timeout=timeout)
            status = "ok" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the part and whatever it started (compile workers)
            child.wait()
            code, status = None, "timeout"
    outcome = {"status": status, "exit_code": code, "wall_s": round(time.perf_counter() - start, 1),
               "budget_s": round(timeout, 1), "log": f"{part}.log"}
    path = out / f"{part}.json"
    outcome["result"] = json.loads(path.read_text()) if path.exists() else None
    return outcome


def estimate_run(prr: Dict[str, Any], rounds: int = PAPER_ROUNDS) -> Dict[str, Any]:
    """The whole run's wall time from the rounds done: the first round (warm-up included) plus
    the median later round times the rounds left."""
    ends = prr.get("round_end_s", [])
    if not ends:
        return {}
    if prr.get("finished") and prr["rounds"] == rounds:
        return {"rounds_done": len(ends), "measured_s": prr["wall_s"], "estimated_s": prr["wall_s"]}
    later = [b - a for a, b in zip(ends, ends[1:])]
    per_round = statistics.median(later) if later else ends[0]
    return {"rounds_done": len(ends), "first_round_s": ends[0], "median_round_s": per_round,
            "estimated_s": ends[0] + (rounds - 1) * per_round}


def report(summary: Dict[str, Any]) -> str:
    """The short table printed at the end."""
    from fedml_prr.tables import Column, Table

    lines = [f"gpu_check on {summary['environment'].get('gpu', summary['environment']['device'])}, "
             f"torch {summary['environment']['torch']}{' (smoke)' if summary['smoke'] else ''}"]
    parts = Table([Column("part", 8, left=True), Column("status", 8, left=True), Column("wall s", 7),
                   Column("budget s", 8)])
    for name, part in summary["parts"].items():
        parts.add(name, part["status"], f"{part.get('wall_s', 0):.0f}", f"{part.get('budget_s', 0):.0f}")
    lines.append(parts.text())
    checks = (summary["parts"].get("checks") or {}).get("result") or {}
    for name, check in checks.items():
        lines.append(f"check {name}: {check['status']}" + (f" - {check['error']}" if "error" in check else ""))
    epochs = ((summary["parts"].get("engine") or {}).get("result") or {}).get("variants", {})
    compiled = (((summary["parts"].get("compile") or {}).get("result") or {}).get("epochs") or {}).get("variants", {})
    rows = {**epochs, **compiled}
    if rows:
        loop = rows.get("loop", {}).get("epoch_s")
        table = Table([Column("engine", 21, left=True), Column("s/epoch", 8), Column("img/s", 8),
                       Column("TFLOP/s", 8), Column("vs loop", 8), Column("setup s", 8)])
        for name, row in rows.items():
            if "epoch_s" in row:
                table.add(name, f"{row['epoch_s']:.2f}", f"{row['images_per_s']:.0f}", f"{row['tflop_per_s']:.2f}",
                          f"{loop / row['epoch_s']:.2f}x" if loop else "-", f"{row['setup_s']:.0f}")
        lines.append(table.text())
    run = summary.get("prr_run_estimate") or {}
    if run:
        prr = summary["parts"]["prr"]["result"]
        lines.append(f"PRR {prr['rounds']} x {prr['epochs']} ({prr['variant']}): {run['rounds_done']} rounds done, "
                     f"whole run {'measured' if 'measured_s' in run else 'estimated'} {run['estimated_s']:.0f} s "
                     f"(target for {PAPER_ROUNDS} x {PAPER_EPOCHS} on the GPU: {TARGET_RUN_S} s)")
    return "\n".join(lines)


def orchestrate(args) -> int:
    from fedml_prr.files import atomic_write_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = dict(BUDGETS, **args.budget)
    summary: Dict[str, Any] = {"command": " ".join(sys.argv), "smoke": args.smoke, "budgets_s": budgets,
                               "total_budget_s": args.total_budget, "environment": environment(args.device),
                               "parts": {}}
    deadline = time.perf_counter() + args.total_budget
    for part in args.parts:
        left = deadline - time.perf_counter()
        if left < 5:
            summary["parts"][part] = {"status": "skipped", "reason": f"--total-budget {args.total_budget} s spent"}
        elif part == "compile" and args.device == "cpu":
            summary["parts"][part] = {"status": "skipped", "reason": COMPILE_ON_CPU}
        else:
            print(f"[gpu_check] {part}: up to {min(budgets[part], left):.0f} s ...", flush=True)
            summary["parts"][part] = launch(args, part, min(budgets[part], left))
            print(f"[gpu_check] {part}: {summary['parts'][part]['status']} in {summary['parts'][part]['wall_s']} s",
                  flush=True)
        prr = (summary["parts"].get("prr") or {}).get("result")
        if prr:
            summary["prr_run_estimate"] = estimate_run(prr, PAPER_ROUNDS if not args.smoke else SMOKE["rounds"])
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    print(report(summary), flush=True)
    failed = [name for name, part in summary["parts"].items()
              if part["status"] != "ok" and not (name == "compile" and args.device == "cpu")]
    for name in failed:
        tail = (out / f"{name}.log").read_text().splitlines()[-15:] if (out / f"{name}.log").exists() else []
        print(f"--- {name} ({summary['parts'][name]['status']}), last lines of {name}.log:", *tail, sep="\n")
    print(f"[gpu_check] summary: {out / 'summary.json'}", flush=True)
    return 1 if failed else 0


def budget(text: str) -> Dict[str, float]:
    part, _, seconds = text.partition("=")
    if part not in PARTS or not seconds:
        raise argparse.ArgumentTypeError(f"expected PART=SECONDS with PART one of {', '.join(PARTS)}, got {text!r}")
    return {part: float(seconds)}


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the CPU run of the test suite)")
    parser.add_argument("--out", default="results/gpu_check", help="folder of summary.json and the part logs")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--budget", type=budget, action="append", default=[],
                        help=f"PART=SECONDS, a part's hard time limit (defaults {BUDGETS})")
    parser.add_argument("--total-budget", type=float, default=TOTAL_BUDGET, help="seconds for every part together")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per engine variant")
    parser.add_argument("--compile-mode", default="default", help="torch.compile mode of the compile part")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # internal: run one part
    args = parser.parse_args(argv)
    args.budget = {k: v for one in args.budget for k, v in one.items()}
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda but torch sees no CUDA device; use --device cpu --smoke on a CPU")
    return run_part(args) if args.part else orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
