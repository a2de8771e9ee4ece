"""Side-by-side speed benchmark: mman (CPU) against the idiomatic PyTorch reference.

    /usr/bin/python3 bench/run_bench.py --build-dir build --threads 2

Builds nothing: it expects BUILD/mman_bench and BUILD/mman_exp (cmake --build BUILD
--target mman_bench mman_exp). In one run it
  1. writes the synthetic IEMOCAP once (mman_exp synth --preset iemocap --seed 0), which
     both sides read;
  2. measures this machine's sgemm peak at the thread count (mman_bench --sgemm-peak);
  3. for every model, ALTERNATES our run and PyTorch's (--reps times; each run its own
     process; the order flips every repetition so drifting load hits both alike), and
     takes medians: one training epoch (composites clstm_lf and mman: their stage-2
     epoch, sub-networks frozen), evaluation throughput on the test split, and peak
     resident memory of the process;
  4. prints a table (and --json FILE): model, our epoch time, PyTorch's, the ratio, the
     same for the epoch's CPU time (all threads; far less sensitive to other work on the
     machine than wall time), our achieved GFLOP/s and its fraction of the sgemm peak,
     eval utterances/s of both, peak memory of both.
Exits non-zero when any run fails (after printing what it has).

Environment. Both implementations get the same environment: the caller's, plus
OMP_WAIT_POLICY=PASSIVE unless --wait-policy inherit (both use GNU OpenMP; on a machine
whose cores are shared, spinning threads make every parallel region wait for a time
slice; see bench/NOTES.md). PyTorch runs in each --torch-config (default: OpenBLAS
single-threaded, which Debian's torch does not set itself, and OpenBLAS at the thread
count) and the faster median counts, so the ratio is against PyTorch's best setting.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE2 = ["clstm_speech", "clstm_ef", "clstm_lf", "clstm_mma", "mman"]
EXTRA = ["clstm_visual", "clstm_text"]


class RunFailed(Exception):
    pass


def run_json(cmd, env, timeout):
    """Runs cmd, returns the JSON object on its last stdout line."""
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"{shlex.join(cmd)}: timed out after {timeout} s")
    lines = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        raise RunFailed(f"{shlex.join(cmd)}: exit {p.returncode}: " + " | ".join(tail))
    return json.loads(lines[-1])


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def parse_config(text):
    """'name:K=V,K=V' or 'name:' -> (name, {K: V})."""
    name, _, rest = text.partition(":")
    env = {}
    for item in filter(None, rest.split(",")):
        k, eq, v = item.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"--torch-config {text}: '{item}' is not KEY=VALUE")
        env[k] = v
    return name, env


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="repetitions per model and implementation (median)")
    ap.add_argument("--models", nargs="+", default=TABLE2, help=f"default: Table 2 ({' '.join(TABLE2)})")
    ap.add_argument("--all", action="store_true", help=f"also {' '.join(EXTRA)}")
    ap.add_argument("--python", default="/usr/bin/python3", help="interpreter with torch (Debian's python3-torch)")
    ap.add_argument("--data", help="synthetic IEMOCAP file to (re)use; default: written to a temporary folder")
    ap.add_argument("--wait-policy", choices=["passive", "inherit"], default="passive")
    ap.add_argument("--torch-config", action="append", type=parse_config, metavar="NAME:K=V,...",
                    help="an environment PyTorch also runs in (repeatable; default: "
                         "blas1:OPENBLAS_NUM_THREADS=1 and blasN:OPENBLAS_NUM_THREADS=<threads>)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    ap.add_argument("--json", help="write all measurements here")
    args = ap.parse_args()

    models = list(args.models) + (EXTRA if args.all else [])
    bench = os.path.join(args.build_dir, "mman_bench")
    exp = os.path.join(args.build_dir, "mman_exp")
    for b in (bench, exp):
        if not os.access(b, os.X_OK):
            sys.exit(f"run_bench: {b} not found; build it first: cmake --build {args.build_dir} "
                     "--target mman_bench mman_exp")
    torch_configs = args.torch_config or [("blas1", {"OPENBLAS_NUM_THREADS": "1"}),
                                          ("blasN", {"OPENBLAS_NUM_THREADS": str(args.threads)})]

    env = dict(os.environ)
    if args.wait_policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    tmp = tempfile.TemporaryDirectory(prefix="mman_bench_")
    data = args.data or os.path.join(tmp.name, "iemocap_synth.h5")
    if not os.path.exists(data):
        subprocess.run([exp, "synth", "--preset", "iemocap", "--seed", "0", "--out", data], check=True,
                       stdout=subprocess.DEVNULL)

    info = {"threads": args.threads, "reps": args.reps, "load_start": loadavg(), "started": time.strftime("%F %T"),
            "wait_policy": env.get("OMP_WAIT_POLICY", "(inherited: unset)"),
            "torch_configs": {n: e for n, e in torch_configs}}
    failures = []
    try:
        sgemm = run_json([bench, "--sgemm-peak", "--threads", str(args.threads)], env, args.timeout)
    except RunFailed as e:
        failures.append(str(e))
        sgemm = {"sgemm_gflops": float("nan")}
    peak = sgemm["sgemm_gflops"]
    info["sgemm"] = sgemm
    print(f"sgemm peak at {args.threads} threads: {json.dumps(sgemm)}; load average {info['load_start']}; "
          f"OMP_WAIT_POLICY={info['wait_policy']}", file=sys.stderr)

    ours_cmd = lambda m: [bench, "--data", data, "--model", m, "--threads", str(args.threads)]  # noqa: E731
    torch_cmd = lambda m: [args.python, os.path.join(HERE, "torch_reference.py"), "--data", data,  # noqa: E731
                           "--model", m, "--threads", str(args.threads)]
    results = {}
    for m in models:
        runs = {"mman": []}
        runs.update({f"torch[{n}]": [] for n, _ in torch_configs})
        for rep in range(args.reps):
            jobs = [("mman", ours_cmd(m), env)] + [(f"torch[{n}]", torch_cmd(m), {**env, **e})
                                                  for n, e in torch_configs]
            if rep % 2 == 1:
                jobs.reverse()
            for key, cmd, run_env in jobs:
                try:
                    r = run_json(cmd, run_env, args.timeout)
                    runs[key].append(r)
                    print(f"  {m:13s} {key:14s} rep {rep + 1}: epoch {r['epoch_seconds']:.3f} s, "
                          f"eval {r['eval_utterances_per_second']:.0f} utt/s, {r['peak_rss_mib']:.0f} MiB "
                          f"(load {loadavg()})", file=sys.stderr)
                except RunFailed as e:
                    failures.append(str(e))
                    print(f"  FAILED: {e}", file=sys.stderr)
        results[m] = runs

    def med(rs, key):
        vals = [r[key] for r in rs if key in r]
        return statistics.median(vals) if vals else float("nan")

    rows = []
    for m, runs in results.items():
        ours = runs["mman"]
        best_key, best = None, float("inf")
        for key, rs in runs.items():
            if key != "mman" and rs and med(rs, "epoch_seconds") < best:
                best_key, best = key, med(rs, "epoch_seconds")
        theirs = runs.get(best_key, [])
        warm = [r for r in ours if "epoch_seconds_warm" in r]
        row = {
            "model": m,
            "mman_epoch_s": med(ours, "epoch_seconds"),
            "mman_epoch_cpu_s": med(ours, "epoch_cpu_seconds"),
            "mman_warm_epoch_s": med(warm, "epoch_seconds_warm") if warm else None,
            "torch_epoch_s": med(theirs, "epoch_seconds"),
            "torch_epoch_cpu_s": med(theirs, "epoch_cpu_seconds"),
            "torch_config": best_key,
            "mman_gflops": med(ours, "train_gflops"),
            "mman_eval_utt_s": med(ours, "eval_utterances_per_second"),
            "torch_eval_utt_s": med(theirs, "eval_utterances_per_second"),
            "mman_rss_mib": med(ours, "peak_rss_mib"),
            "torch_rss_mib": med(theirs, "peak_rss_mib"),
            "torch_epoch_s_by_config": {k: med(rs, "epoch_seconds") for k, rs in runs.items() if k != "mman"},
        }
        row["ratio"] = row["torch_epoch_s"] / row["mman_epoch_s"]
        row["cpu_ratio"] = row["torch_epoch_cpu_s"] / row["mman_epoch_cpu_s"]
        row["ratio_warm"] = row["torch_epoch_s"] / row["mman_warm_epoch_s"] if warm else None
        row["peak_fraction"] = row["mman_gflops"] / peak
        rows.append(row)
    info["load_end"] = loadavg()

    print(f"\n{args.threads} threads, median of {args.reps}; sgemm peak {peak:.1f} GFLOP/s; "
          f"OMP_WAIT_POLICY={info['wait_policy']}; load average {info['load_start']} -> {info['load_end']}")
    print("Composites (clstm_lf, mman): stage-2 epochs; the first one computes the frozen sub-networks "
          "(and caches their outputs), later ones reuse them.\n")
    print("Epoch CPU seconds: the process's CPU time (all threads) over the epoch, which other work on the machine "
          "changes far less than wall time.\n")
    print("| model | mman epoch (s) | PyTorch epoch (s) | ratio | mman later epochs (s) | ratio | "
          "mman epoch CPU (s) | PyTorch epoch CPU (s) | CPU ratio | mman GFLOP/s | "
          "of sgemm peak | mman eval utt/s | PyTorch eval utt/s | mman peak MiB | PyTorch peak MiB |")
    print("|" + "---|" * 15)
    for r in rows:
        cfg = f" [{r['torch_config'][6:-1]}]" if r["torch_config"] else ""
        warm = (f"{r['mman_warm_epoch_s']:.3f} | {r['ratio_warm']:.1f}x" if r["mman_warm_epoch_s"] is not None
                else "– | –")
        print(f"| {r['model']} | {r['mman_epoch_s']:.3f} | {r['torch_epoch_s']:.3f}{cfg} | {r['ratio']:.1f}x | {warm} | "
              f"{r['mman_epoch_cpu_s']:.3f} | {r['torch_epoch_cpu_s']:.3f} | {r['cpu_ratio']:.1f}x | "
              f"{r['mman_gflops']:.1f} | {100 * r['peak_fraction']:.0f}% | {r['mman_eval_utt_s']:.0f} | "
              f"{r['torch_eval_utt_s']:.0f} | {r['mman_rss_mib']:.0f} | {r['torch_rss_mib']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows, "runs": results, "failures": failures}, f, indent=1)
    if failures:
        print(f"\n{len(failures)} run(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
