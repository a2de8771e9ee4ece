"""Writes an `mman-checkpoint/1` file with h5py from a plain dict of numpy arrays, the way
a researcher would export a PyTorch state_dict (`{k: v.numpy() for k, v in
model.state_dict().items()}`), for tests/test_checkpoint.cpp. No torch needed.

usage: make_checkpoint.py OUT [--layout root|params] [--dtype float32|float64]

Tensor k of STATE (in order) holds value (k + 1) + i / 1000 at flat index i, so the C++
test can compute what it must read. --layout params puts the tensors under /params
instead of the root (an alternative some tools use); --dtype float64 stores doubles
(numpy's default dtype), which the loader converts.
"""
import argparse
import json

import h5py
import numpy as np

# A tiny clstm_speech-like state_dict: names and shapes as PyTorch's nn.LSTM / nn.Linear.
STATE = [
    ("lstm.weight_ih_l0", (8, 3)),
    ("lstm.weight_hh_l0", (8, 2)),
    ("lstm.bias_ih_l0", (8,)),
    ("lstm.bias_hh_l0", (8,)),
    ("fc.weight", (4, 2)),
    ("fc.bias", (4,)),
    ("out.weight", (3, 4)),
    ("out.bias", (3,)),
]


def state_dict(dtype):
    out = {}
    for k, (name, shape) in enumerate(STATE):
        n = int(np.prod(shape))
        out[name] = ((k + 1) + np.arange(n, dtype=np.float64) / 1000.0).reshape(shape).astype(dtype)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layout", choices=["root", "params"], default="root")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = ap.parse_args()
    with h5py.File(args.out, "w") as f:
        f.attrs["schema"] = "mman-checkpoint/1"
        f.attrs["model_type"] = "clstm_speech"
        f.attrs["model_name"] = "speech_small"
        f.attrs["config"] = json.dumps({"type": "clstm_speech", "hidden": 2, "fc": 4})
        f.attrs["epoch"] = 3
        f.attrs["seed"] = 7
        f.attrs["metrics"] = json.dumps({"accuracy": 0.5})
        prefix = "params/" if args.layout == "params" else ""
        for name, value in state_dict(np.dtype(args.dtype)).items():
            f.create_dataset(prefix + name, data=value)


if __name__ == "__main__":
    main()
