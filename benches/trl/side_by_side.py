"""curric and TRL's GRPOTrainer back to back on one checkpoint, one machine: prints the table
the README shows. Run from the repository root after `cargo build --release`:

    python benches/trl/side_by_side.py [--threads 2] [--steps 6] [--rounds 1]

Needs torch, transformers, trl and datasets (benches/trl/requirements.txt). Writes
benches/trl/work/ (checkpoint, prompts, run directories). Each engine runs `steps` GRPO steps at
32 and at 128 new tokens; the first step is a warm-up and the median of the rest is reported.
With `--rounds N` the pair runs N times, TRL first in rounds 1, 3, … and curric first in 2, 4, …,
one row per round and the median ratio at the end: on a machine whose speed drifts by ±20 %
within minutes (shared cloud cores), a ratio is only as good as the two runs' closeness in time.
"""
import resource
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "work")
CURRIC = os.path.join(HERE, "..", "..", "target", "release", "curric")
PROMPT_TOKENS = 5  # "what is A plus B"


def gemm_gflops(threads):
    """f32 GEMM throughput of this machine at the benchmark's MLP shape, as torch measures it."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(128 * 37, 256), torch.randn(256, 768)
    for _ in range(3):
        a @ b
    n, t0 = 50, time.perf_counter()
    for _ in range(n):
        a @ b
    return 2 * a.shape[0] * 256 * 768 * n / (time.perf_counter() - t0) / 1e9


def params():
    from safetensors import safe_open
    with safe_open(os.path.join(WORK, "ckpt", "model.safetensors"), "pt") as f:
        return sum(f.get_tensor(k).numel() for k in f.keys())


def step_gflop(p, new_tokens):
    """The issue's count: policy forward + backward (6·P per trained token) and a reference
    forward (2·P per token) over 128 padded sequences, plus 2·P per decoded token."""
    tokens = 128 * (PROMPT_TOKENS + new_tokens)
    return (6 * p * tokens + 2 * p * tokens + 2 * p * 128 * new_tokens) / 1e9


def run_trl(new_tokens, steps, threads):
    out = subprocess.run([sys.executable, os.path.join(HERE, "trl_grpo.py"), WORK, str(new_tokens),
                          str(steps), str(threads)], capture_output=True, text=True, check=True)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)["step_s"]


def run_curric(new_tokens, threads):
    run_dir = os.path.join(WORK, "runs", f"curric_{new_tokens}")
    subprocess.run(["rm", "-rf", run_dir], check=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    t0 = time.perf_counter()
    subprocess.run([CURRIC, "run", os.path.join(HERE, f"grpo_{new_tokens}.curr"), "--run-dir", run_dir,
                    "--quiet", "--checkpoint-every", "1000"], env=env, check=True,
                   capture_output=True)
    wall = time.perf_counter() - t0
    user = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - cpu0
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "phases", "grpo", "metrics.jsonl"))]
    walls = [b["wall_time"] - a["wall_time"] for a, b in zip(rows, rows[1:])]
    return {
        "step_s": walls,
        "rollout_s": [r["time/rollout_s"] for r in rows[1:]],
        "update_s": [r["time/update_s"] for r in rows[1:]],
        "wall": wall,
        "user": user,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    subprocess.run([sys.executable, os.path.join(HERE, "make_checkpoint.py"), WORK], check=True)
    gemm = gemm_gflops(args.threads)
    p = params()
    print(f"f32 GEMM {gemm:.0f} GFLOP/s ({args.threads} threads); {p / 1e6:.2f} M parameters\n")
    print("| new tokens | TRL s/step | curric s/step (rollout, update) | curric ÷ TRL speed "
          "| TRL GFLOP/s (% GEMM) | curric GFLOP/s (% GEMM) | curric user ÷ wall |")
    print("|---|---|---|---|---|---|---|")
    ratios = {32: [], 128: []}
    for r in range(args.rounds):
        for n in (32, 128):
            if r % 2 == 0:
                trl = statistics.median(run_trl(n, args.steps, args.threads)[1:])
                c = run_curric(n, args.threads)
            else:
                c = run_curric(n, args.threads)
                trl = statistics.median(run_trl(n, args.steps, args.threads)[1:])
            cur = statistics.median(c["step_s"])
            roll, upd = statistics.median(c["rollout_s"]), statistics.median(c["update_s"])
            g = step_gflop(p, n)
            ratios[n].append(trl / cur)
            print(f"| {n} | {trl:.2f} | {cur:.2f} ({roll:.2f}, {upd:.2f}) | {trl / cur:.2f}× "
                  f"| {g / trl:.0f} ({100 * g / trl / gemm:.0f} %) "
                  f"| {g / cur:.0f} ({100 * g / cur / gemm:.0f} %) | {c['user'] / c['wall']:.2f} |",
                  flush=True)
    if args.rounds > 1:
        for n in (32, 128):
            rs = sorted(ratios[n])
            print(f"\n{n} new tokens: curric ÷ TRL median {statistics.median(rs):.2f}× "
                  f"over {len(rs)} rounds (min {rs[0]:.2f}×, max {rs[-1]:.2f}×)")


if __name__ == "__main__":
    main()
