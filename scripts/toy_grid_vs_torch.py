#!/usr/bin/env python3
"""The committed toy grid end to end: `saerun run experiments/toy_superposition.toml` (cold
cache) against the same grid in PyTorch, `../shared/bench/toy_pair.py` once per grid point
(same data generator, loss, batch, lr and steps), in one invocation, at each thread count.

    python3 scripts/toy_grid_vs_torch.py [--threads 2,1] [--set KEY=VALUE ...]
        [--saerun target/release/saerun] [--torch-python $SAERUN_BENCH_PYTHON]

`--set` is passed to saerun and applied to the grid toy_pair.py runs (sae.dict_ratios,
sae.l1, train.batch_size, train.lr, train.steps, data.train_samples), e.g. a subset of the
grid with `--set 'sae.dict_ratios=[2]' --set 'sae.l1=[0.05]'`. Needs pyarrow for saerun's
metrics table (this interpreter) and torch (the --torch-python one).

Prints, per thread count (RAYON_NUM_THREADS for saerun, OMP_NUM_THREADS for torch): per grid
point the training seconds and MMCS of each side; then totals: end-to-end wall (saerun's whole
run, data + training + evaluation + report, against the sum of the torch processes), training
seconds, and CPU seconds (user + sys of the child processes, less sensitive to other load on
the machine than wall time). Ratios are torch / saerun (higher: saerun faster).
toy_pair.py has no learning-rate warm-up, so saerun runs with `train.warmup_steps=0` too
(the spec's 100-step warm-up lowers MMCS at 2048 latents, l1 0.03, from 0.976 to 0.944).
Differences left as they are: each side draws its own data and initialisation from its own
generator, and saerun draws batches epoch by epoch without replacement (toy_pair.py with).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# toy_pair.py's fixed setting; the spec must match it.
TOY_PAIR_DATA = {"activation_dim": 256, "n_features": 512, "mean_active": 5.0,
                 "prob_decay": 0.99, "correlated": False}


def machine():
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = lambda name: next((l.split(":", 1)[1].strip() for l in info.splitlines()
                               if l.startswith(name)), "")
    flags = field("flags").split()
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile", "amx_bf16"]
    return (f"machine: {field('model name') or 'unknown CPU'}; {os.cpu_count()} logical CPUs; "
            f"flags: {' '.join(f for f in wanted if f in flags) or 'none of avx2/avx512/amx'}; "
            f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


def apply_sets(spec, sets):
    for s in sets:
        key, _, value = s.partition("=")
        section, _, name = key.partition(".")
        try:
            v = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            v = value  # a bare string, as saerun accepts it
        spec.setdefault(section, {})[name] = v
    return spec


def grid(spec, sets):
    data, sae, train = spec["data"], spec["sae"], spec["train"]
    for k, v in TOY_PAIR_DATA.items():
        if data.get(k, v) != v:
            sys.exit(f"error: data.{k} = {data.get(k)!r}, but toy_pair.py fixes it at {v!r}")
    if sae.get("architecture", "relu_l1") != "relu_l1" or sae.get("ratio_base") != "n_features":
        sys.exit("error: toy_pair.py trains ReLU-L1 SAEs sized in multiples of n_features")
    if any(s.startswith("train.warmup_steps=") and s != "train.warmup_steps=0" for s in sets):
        sys.exit("error: toy_pair.py has no learning-rate warm-up; train.warmup_steps must be 0")
    if train.get("mse", "sum") != "sum" or train.get("schedule", "constant") != "constant":
        sys.exit("error: toy_pair.py uses sum-MSE and a constant learning rate")
    as_list = lambda v: v if isinstance(v, list) else [v]
    common = {"batch": train["batch_size"], "lr": train["lr"], "steps": train["steps"],
              "samples": data["train_samples"]}
    return [dict(ratio=r, l1=l, d_sae=int(r * data["n_features"]), **common)
            for r in as_list(sae["dict_ratios"]) for l in as_list(sae["l1"])]


def timed(cmd, env):
    """Run cmd; (stdout, wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out.stdout, wall, cpu


def run_saerun(args, threads):
    import pyarrow.parquet as pq
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix="toy-grid-") as tmp:
        cmd = [args.saerun, "-q", "run", args.spec, "--cache-dir", f"{tmp}/cache",
               "--results-dir", f"{tmp}/results", "--json", "--checkpoint-every", "0",
               "--set", "train.warmup_steps=0"]  # toy_pair.py's schedule has no warm-up
        for s in args.set:
            cmd += ["--set", s]
        stdout, wall, cpu = timed(cmd, env)
        summary = json.loads(stdout)
        train_s = {s["label"]: s["wall_seconds"] for s in summary["stages"] if s["stage"] == "train_sae"}
        metrics = pq.read_table(Path(summary["run_dir"]) / "metrics.parquet").to_pylist()
    points = {}
    for row in metrics:
        label = f"d_sae={row['d_sae']} l1={row['l1']:g} seed={row['seed']}"
        points[(row["d_sae"], row["l1"])] = {"train_s": train_s.get(label), "mmcs": row["mmcs_truth"]}
    return {"wall": wall, "cpu": cpu, "points": points}


def run_torch(args, threads, points):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = {"wall": 0.0, "cpu": 0.0, "points": {}}
    for p in points:
        cmd = [args.torch_python, args.toy_pair, "--ratio", str(p["ratio"]), "--l1", str(p["l1"]),
               "--batch", str(p["batch"]), "--lr", str(p["lr"]), "--steps", str(p["steps"]),
               "--samples", str(p["samples"])]
        stdout, wall, cpu = timed(cmd, env)
        r = json.loads(stdout.strip().splitlines()[-1])
        out["wall"] += wall
        out["cpu"] += cpu
        out["threads"] = r["threads"]
        out["points"][(p["d_sae"], p["l1"])] = {"train_s": r["train_s"], "mmcs": r["mmcs"]}
        print(f"  torch d_sae={p['d_sae']} l1={p['l1']:g}: train {r['train_s']:.1f} s, "
              f"MMCS {r['mmcs']:.4f}", file=sys.stderr, flush=True)
    return out


def main():
    shared = os.environ.get("SAERUN_SHARED_DIR", str(ROOT.parent / "shared"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(ROOT / "experiments/toy_superposition.toml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", default="2,1", help="comma-separated thread counts")
    ap.add_argument("--saerun", default=str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/saerun"))
    ap.add_argument("--torch-python", default=os.environ.get("SAERUN_BENCH_PYTHON", "python3"))
    ap.add_argument("--toy-pair", default=str(Path(shared) / "bench/toy_pair.py"))
    args = ap.parse_args()
    for path, what in [(args.saerun, "saerun binary (cargo build --release)"), (args.toy_pair, "toy_pair.py"),
                       (args.spec, "spec")]:
        if not Path(path).is_file():
            sys.exit(f"error: {what} not found at {path}")
    points = grid(apply_sets(tomllib.loads(Path(args.spec).read_text()), args.set), args.set)
    print(machine())
    print(f"grid: {args.spec} --set train.warmup_steps=0 {' '.join('--set ' + s for s in args.set)}: {len(points)} SAEs, "
          f"batch {points[0]['batch']}, lr {points[0]['lr']}, {points[0]['steps']} steps each")
    for threads in [int(t) for t in args.threads.split(",")]:
        ours = run_saerun(args, threads)
        print(f"  saerun ({threads} threads): {ours['wall']:.1f} s wall", file=sys.stderr, flush=True)
        theirs = run_torch(args, threads, points)
        print(f"\nthreads: saerun RAYON_NUM_THREADS={threads}, torch OMP_NUM_THREADS={threads} "
              f"(torch.get_num_threads() = {theirs['threads']})")
        print(f"{'d_sae':>6} {'l1':>6} {'saerun train s':>15} {'torch train s':>14} {'ratio':>6} "
              f"{'MMCS saerun':>12} {'MMCS torch':>11} {'|diff|':>7}")
        worst = 0.0
        train_ours = train_theirs = 0.0
        for p in points:
            key = (p["d_sae"], p["l1"])
            o, t = ours["points"][key], theirs["points"][key]
            diff = abs(o["mmcs"] - t["mmcs"])
            worst = max(worst, diff)
            train_ours += o["train_s"]
            train_theirs += t["train_s"]
            print(f"{p['d_sae']:>6} {p['l1']:>6g} {o['train_s']:>15.1f} {t['train_s']:>14.1f} "
                  f"{t['train_s'] / o['train_s']:>5.2f}x {o['mmcs']:>12.4f} {t['mmcs']:>11.4f} {diff:>7.4f}")
        print(f"training (sum):          saerun {train_ours:8.1f} s  torch {train_theirs:8.1f} s  "
              f"{train_theirs / train_ours:.2f}x")
        print(f"end to end (wall):       saerun {ours['wall']:8.1f} s  torch {theirs['wall']:8.1f} s  "
              f"{theirs['wall'] / ours['wall']:.2f}x")
        print(f"end to end (CPU, u+s):   saerun {ours['cpu']:8.1f} s  torch {theirs['cpu']:8.1f} s  "
              f"{theirs['cpu'] / ours['cpu']:.2f}x")
        print(f"largest MMCS difference: {worst:.4f} ({'within' if worst <= 0.01 else 'OUTSIDE'} ±0.01)")
    print(f"\nload average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
