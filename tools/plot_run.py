#!/usr/bin/env python3
"""Figures for an mman run directory: confusion-matrix heatmaps and learning curves.

    /usr/bin/python3 tools/plot_run.py RUN_DIR

Reads RUN_DIR/results.json and RUN_DIR/metrics.csv (written by `mman_exp run`) and
writes PNG files into RUN_DIR/figures/:
  confusion_<model>.png    test confusion matrix, row-normalised % as in Figure 3 of the
                           paper, counts summed over seeds before normalising
  learning_curves.png      per model: training loss and validation accuracy per epoch
                           (mean over seeds, shaded min-max when there are several)
  binary_<model>.png       binary4 runs: per-emotion accuracy and weighted F1
Every file is written to a temporary name and renamed, so a figure is whole or absent.
Exit codes: 0 done, 1 bad run directory, 2 matplotlib missing.
"""

import csv
import json
import os
import sys
from collections import defaultdict


def fail(msg, code=1):
    print(f"plot_run.py: error: {msg}", file=sys.stderr)
    sys.exit(code)


def save(fig, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    os.replace(tmp, path)


def load_run(run_dir):
    results_path = os.path.join(run_dir, "results.json")
    metrics_path = os.path.join(run_dir, "metrics.csv")
    try:
        with open(results_path, encoding="utf-8") as f:
            results = json.load(f)
    except OSError as e:
        fail(f"{results_path}: cannot read: {e.strerror}")
    except json.JSONDecodeError as e:
        fail(f"{results_path}: not valid JSON: {e}")
    rows = []
    if os.path.exists(metrics_path):
        with open(metrics_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    return results, rows


def plot_confusions(plt, results, out_dir):
    written = []
    for name, model in results.get("models", {}).items():
        total = None
        names = None
        for seed_result in model.get("per_seed", {}).values():
            classes = seed_result.get("test", {}).get("classes")
            if not classes or not classes.get("confusion"):
                continue
            counts = classes["confusion"]
            names = classes["class_names"]
            total = counts if total is None else [[a + b for a, b in zip(r1, r2)] for r1, r2 in zip(total, counts)]
        if total is None:
            continue
        pct = []
        for row in total:
            s = sum(row)
            pct.append([100.0 * v / s if s else 0.0 for v in row])
        n = len(names)
        fig, ax = plt.subplots(figsize=(1.2 * n + 1.5, 1.1 * n + 1.0))
        im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{pct[i][j]:.1f}", ha="center", va="center",
                        color="white" if pct[i][j] > 60 else "black", fontsize=9)
        ax.set_xticks(range(n), names, rotation=30, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        seeds = len(model.get("per_seed", {}))
        ax.set_title(f"{name} (test, row %, {seeds} seed{'s' if seeds != 1 else ''})")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        path = os.path.join(out_dir, f"confusion_{name}.png")
        save(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def plot_binary(plt, results, out_dir):
    written = []
    for name, model in results.get("models", {}).items():
        acc = defaultdict(list)
        f1 = defaultdict(list)
        for seed_result in model.get("per_seed", {}).values():
            for head in seed_result.get("test", {}).get("heads", []):
                label = head["class_names"][-1]
                acc[label].append(100 * head["accuracy"])
                f1[label].append(100 * head["weighted_f1"])
        if not acc:
            continue
        labels = list(acc)
        xs = range(len(labels))
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar([x - 0.2 for x in xs], [sum(acc[l]) / len(acc[l]) for l in labels], 0.4, label="accuracy")
        ax.bar([x + 0.2 for x in xs], [sum(f1[l]) / len(f1[l]) for l in labels], 0.4, label="weighted F1")
        ax.set_xticks(list(xs), labels)
        ax.set_ylim(0, 100)
        ax.set_ylabel("%")
        ax.set_title(f"{name}: binary per-emotion scores (test)")
        ax.legend()
        path = os.path.join(out_dir, f"binary_{name}.png")
        save(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def plot_curves(plt, rows, out_dir):
    if not rows:
        return []
    # model -> epoch -> list over seeds
    loss = defaultdict(lambda: defaultdict(list))
    acc = defaultdict(lambda: defaultdict(list))
    for r in rows:
        try:
            epoch = int(r["epoch"])
            loss[r["model"]][epoch].append(float(r["train_loss"]))
            acc[r["model"]][epoch].append(100 * float(r["valid_acc"]))
        except (KeyError, ValueError):
            continue
    if not loss:
        return []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for model in loss:
        for ax, series in ((ax1, loss[model]), (ax2, acc[model])):
            epochs = sorted(series)
            mean = [sum(series[e]) / len(series[e]) for e in epochs]
            line, = ax.plot(epochs, mean, label=model)
            if any(len(series[e]) > 1 for e in epochs):
                ax.fill_between(epochs, [min(series[e]) for e in epochs], [max(series[e]) for e in epochs],
                                color=line.get_color(), alpha=0.15)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation accuracy (%)")
    ax2.legend(fontsize=8)
    fig.suptitle("learning curves")
    path = os.path.join(out_dir, "learning_curves.png")
    save(fig, path)
    plt.close(fig)
    return [path]


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 1
    run_dir = argv[1]
    if not os.path.isdir(run_dir):
        fail(f"{run_dir}: not a directory")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_run.py: matplotlib is not installed; no figures written", file=sys.stderr)
        return 2
    results, rows = load_run(run_dir)
    out_dir = os.path.join(run_dir, "figures")
    os.makedirs(out_dir, exist_ok=True)
    written = plot_confusions(plt, results, out_dir) + plot_binary(plt, results, out_dir) + plot_curves(plt, rows, out_dir)
    for path in written:
        print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
