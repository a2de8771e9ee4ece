"""PyTorch reference for mman's LSTM layer (tests/test_lstm.cpp).

Usage: /usr/bin/python3 lstm_reference.py DIR

DIR/meta.json lists cases: {"cases": [{"input", "hidden", "layers", "bidirectional",
"lengths" (non-increasing), "params" (nn.LSTM parameter names in file order)}]}.
For case i, DIR/case{i}.in.bin holds float32 values: every parameter in the listed
order (row-major), then the input rows conversation by conversation ([sum(lengths) x
input]), then the loss weights w in the same order ([sum(lengths) x hidden*dirs]).

The script builds nn.LSTM in float64, runs it on pack_padded_sequence of the
zero-padded batch (h0 = c0 = 0), and writes DIR/case{i}.out.bin as float64: the
output rows (conversation by conversation), the gradient of sum(w * y) w.r.t. the
input rows, then the gradient w.r.t. every parameter in the listed order.

Exit status 3 (with a message naming torch) when torch cannot be imported.
"""

import json
import os
import sys

import numpy as np

try:
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
except Exception as exc:  # noqa: BLE001 - any import failure means "no torch here"
    print(f"torch could not be imported: {exc}")
    sys.exit(3)


def run_case(directory: str, index: int, case: dict) -> None:
    n_in, hidden, layers = case["input"], case["hidden"], case["layers"]
    bidirectional = bool(case["bidirectional"])
    lengths = [int(n) for n in case["lengths"]]
    dirs = 2 if bidirectional else 1
    lstm = torch.nn.LSTM(n_in, hidden, layers, bidirectional=bidirectional).double()
    params = dict(lstm.named_parameters())
    if list(params) != list(case["params"]):
        raise SystemExit(f"case {index}: parameter names differ: torch {list(params)}, mman {case['params']}")

    data = np.fromfile(os.path.join(directory, f"case{index}.in.bin"), dtype=np.float32)
    pos = 0

    def take(count: int) -> np.ndarray:
        nonlocal pos
        if pos + count > data.size:
            raise SystemExit(f"case {index}: input file too short")
        chunk = data[pos:pos + count].astype(np.float64)
        pos += count
        return chunk

    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.from_numpy(take(p.numel()).reshape(tuple(p.shape))))
    rows = sum(lengths)
    x_rows = take(rows * n_in).reshape(rows, n_in)
    w_rows = take(rows * hidden * dirs).reshape(rows, hidden * dirs)
    if pos != data.size:
        raise SystemExit(f"case {index}: input file has {data.size - pos} extra values")

    steps, convs = max(lengths), len(lengths)
    x = torch.zeros(steps, convs, n_in, dtype=torch.float64)
    w = torch.zeros(steps, convs, hidden * dirs, dtype=torch.float64)
    r = 0
    for b, n in enumerate(lengths):
        x[:n, b] = torch.from_numpy(x_rows[r:r + n])
        w[:n, b] = torch.from_numpy(w_rows[r:r + n])
        r += n
    x.requires_grad_(True)

    packed = pack_padded_sequence(x, torch.tensor(lengths, dtype=torch.int64), enforce_sorted=True)
    out_packed, _ = lstm(packed)
    y, _ = pad_packed_sequence(out_packed, total_length=steps)  # [T x B x h*dirs], zero padding
    (y * w).sum().backward()

    def conversation_major(t: torch.Tensor) -> np.ndarray:
        return np.concatenate([t[:n, b].detach().numpy() for b, n in enumerate(lengths)], axis=0).ravel()

    pieces = [conversation_major(y), conversation_major(x.grad)]
    pieces += [p.grad.detach().numpy().ravel() for p in params.values()]
    np.concatenate(pieces).astype(np.float64).tofile(os.path.join(directory, f"case{index}.out.bin"))


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    directory = sys.argv[1]
    with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    torch.set_num_threads(1)
    for index, case in enumerate(meta["cases"]):
        run_case(directory, index, case)


if __name__ == "__main__":
    main()
