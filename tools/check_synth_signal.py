#!/usr/bin/python3
"""Per-utterance linear baselines on an mman-dataset/1 file: how much class signal each modality carries.

Usage:
    build/mman_exp synth --seed 0 --out synth.h5
    /usr/bin/python3 tools/check_synth_signal.py synth.h5 [--protocol iemocap4|iemocap6]

Fits multinomial logistic regression (numpy, full-batch gradient descent with L2, no
context: one utterance at a time) on the train split, standardised with train
statistics, and prints test accuracy (WA) for audio, visual, text, audio+text and all
three, next to the majority-class share. Used to tune the synthetic generator
(docs/synthetic_data.md); works on any file with IEMOCAP label names.
"""
import argparse
import sys

import h5py
import numpy as np

IEMOCAP4 = {"hap": 0, "exc": 0, "sad": 1, "fru": 1, "neu": 2, "ang": 3}


def strings(values):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def load(path, protocol):
    with h5py.File(path, "r") as f:
        names = strings(f.attrs["label_names"])
        modalities = strings(f.attrs["modalities"])
        labels = f["labels"][:]
        offsets = f["conversations/offsets"][:]
        ids = strings(f["conversations/ids"][:])
        split_ids = {s: set(strings(f["splits/" + s][:])) for s in ("train", "test")}
        features = {m: f["features/" + m][:].astype(np.float64) for m in modalities}
    if protocol == "iemocap4":
        to_class = np.array([IEMOCAP4.get(n, -1) for n in names])
    else:
        to_class = np.arange(len(names))
    y = np.where(labels >= 0, to_class[np.maximum(labels, 0)], -1)
    split = np.full(len(labels), "", dtype=object)
    for c, cid in enumerate(ids):
        for s, members in split_ids.items():
            if cid in members:
                split[offsets[c]:offsets[c + 1]] = s
    return features, y, split


def logistic_regression(x_train, y_train, x_test, classes, l2=1e-2, steps=400, lr=0.5):
    n, d = x_train.shape
    w = np.zeros((d, classes))
    b = np.zeros(classes)
    onehot = np.eye(classes)[y_train]
    for _ in range(steps):
        logits = x_train @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / n
        w -= lr * (x_train.T @ g + l2 * w)
        b -= lr * g.sum(axis=0)
    return (x_test @ w + b).argmax(axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file")
    parser.add_argument("--protocol", default="iemocap4", choices=["iemocap4", "iemocap6"])
    args = parser.parse_args()
    features, y, split = load(args.file, args.protocol)
    train = (split == "train") & (y >= 0)
    test = (split == "test") & (y >= 0)
    classes = int(y.max()) + 1
    for m, x in features.items():
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        features[m] = (x - mean) / np.where(std > 0, std, 1.0)
    majority = np.bincount(y[test], minlength=classes).max() / test.sum()
    print(f"{args.file}: {args.protocol}, train {train.sum()} / test {test.sum()} utterances, "
          f"test majority class {100 * majority:.1f}%")
    sets = [[m] for m in features] + [["audio", "text"], list(features)]
    for group in sets:
        if not all(m in features for m in group):
            continue
        x = np.concatenate([features[m] for m in group], axis=1)
        pred = logistic_regression(x[train], y[train], x[test], classes)
        wa = (pred == y[test]).mean()
        print(f"  logistic regression on {'+'.join(group):<18} test WA {100 * wa:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
