"""Writes the PyTorch-parity fixtures that tests/test_torch_parity.cpp compares against.

    make_parity_fixture.py --out DIR [--case NAME ...] [--seed S] [--list]

Exit status 3, with a message naming torch, when torch or h5py cannot be imported.

Into DIR:
  data.h5                 a small `mman-dataset/1` file (ragged conversations, some
                          unlabelled utterances, IEMOCAP label names), written with h5py
  <case>/model.h5         the PyTorch model's weights as an `mman-checkpoint/1` file
  <case>/expected.h5      what the C++ side must reproduce (float64, every row of every
                          array in DATASET UTTERANCE ORDER, i.e. row i is utterance i of
                          data.h5, whatever order a batch packs them in):
    /logits   [N x outputs]  evaluation-mode logits (one batch holding every conversation)
    /loss     scalar         masked mean cross-entropy of those logits (the case's protocol)
    /attention [N x 9]       MMA models: alpha, query m and key n at column 3m + n,
                             modalities audio, visual, text (mman: its clstm_mma subnet)
    /train/losses [steps]    the loss of each of `steps` Adam steps (computed in that step's
                             forward, before its update); dropout probabilities all 0, Adam
                             lr 1e-3, gradients clipped to global norm 5 (the trainer's
                             default; at these norms it does not trigger, see grad_norms);
                             composites train with frozen subnets (stage 2)
    /train/final_loss        evaluation loss after the last step
    /train/grad_norms [steps] global gradient norm of the trainable parameters per step,
                             before clipping (a check of every backward pass)
  attributes on expected.h5: case, model_type, protocol, float32_error (largest
  normalised difference between this float32 PyTorch run and the same run in float64,
  i.e. how much of the tolerance float32 rounding alone uses).

The expected values come from PyTorch in float32, as a researcher would run it.
"""

import argparse
import json
import os
import sys
from dataclasses import asdict, replace

import numpy as np

try:
    import h5py
    import torch
except Exception as exc:  # noqa: BLE001 - any import failure means "no PyTorch here"
    print(f"torch or h5py could not be imported: {exc}")
    sys.exit(3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mman_torch as M  # noqa: E402

STR = h5py.string_dtype("utf-8")

# Conversation lengths: ragged, with a tie (14) and a one-utterance conversation, so the
# packed layout has steps where conversations end.
CONV_LENGTHS = [9, 14, 1, 14, 6, 11]
TRAIN_STEPS = 3
LR = 1e-3
CLIP_NORM = 5.0

# name -> (ModelConfig overrides, protocol)
CASES = {
    "clstm_speech": (dict(type="clstm_speech"), "iemocap4"),
    "clstm_visual": (dict(type="clstm_visual"), "iemocap4"),
    "clstm_text": (dict(type="clstm_text"), "iemocap4"),
    "clstm_text_bidirectional": (dict(type="clstm_text", bidirectional=True), "iemocap4"),
    "clstm_ef": (dict(type="clstm_ef"), "iemocap4"),
    "clstm_mma": (dict(type="clstm_mma"), "iemocap4"),
    "clstm_mma_cosine": (dict(type="clstm_mma", score="cosine"), "iemocap4"),
    "clstm_mma_concat": (dict(type="clstm_mma", skip="concat"), "iemocap4"),
    "clstm_mma_cosine_concat": (dict(type="clstm_mma", score="cosine", skip="concat"), "iemocap4"),
    "clstm_lf": (dict(type="clstm_lf"), "iemocap4"),
    "mman": (dict(type="mman"), "iemocap4"),
    "mman_binary4": (dict(type="mman"), "binary4"),
}


# ---------------------------------------------------------------------------------------
# data.h5
# ---------------------------------------------------------------------------------------


def write_dataset(path: str, seed: int) -> None:
    """A small dataset in the `mman-dataset/1` layout (SPEC section 1): every raw label,
    unlabelled utterances, two speakers alternating, features of unit scale."""
    rng = np.random.default_rng(seed)
    n = sum(CONV_LENGTHS)
    offsets = np.concatenate([[0], np.cumsum(CONV_LENGTHS)]).astype(np.int64)
    labels = rng.integers(0, len(M.IEMOCAP_LABELS), size=n).astype(np.int32)
    labels[: len(M.IEMOCAP_LABELS)] = np.arange(len(M.IEMOCAP_LABELS))  # every raw class occurs
    labels[rng.choice(n, size=n // 8, replace=False)] = -1               # unlabelled, context only
    conv_ids = [f"Ses0{1 + c % 5}_conv{c:02d}" for c in range(len(CONV_LENGTHS))]
    utt_ids, speakers = [], []
    for c, length in enumerate(CONV_LENGTHS):
        for t in range(length):
            speakers.append("MF"[t % 2])
            utt_ids.append(f"{conv_ids[c]}_{'MF'[t % 2]}{t:03d}")
    with h5py.File(path, "w") as f:
        f.attrs["schema"] = "mman-dataset/1"
        f.attrs.create("label_names", list(M.IEMOCAP_LABELS), dtype=STR)
        f.attrs.create("modalities", list(M.MODALITIES), dtype=STR)
        for m in M.MODALITIES:
            f.create_dataset(f"features/{m}", data=rng.standard_normal((n, M.IEMOCAP_DIMS[m]), dtype=np.float32))
        f.create_dataset("labels", data=labels)
        f.create_dataset("speakers", data=speakers, dtype=STR)
        f.create_dataset("utterance_ids", data=utt_ids, dtype=STR)
        f.create_dataset("conversations/ids", data=conv_ids, dtype=STR)
        f.create_dataset("conversations/offsets", data=offsets)
        f.create_dataset("conversations/sessions", data=[f"Ses0{1 + c % 5}" for c in range(len(conv_ids))],
                         dtype=STR)
        f.create_dataset("splits/train", data=conv_ids[:4], dtype=STR)
        f.create_dataset("splits/test", data=conv_ids[4:], dtype=STR)


# ---------------------------------------------------------------------------------------
# model.h5
# ---------------------------------------------------------------------------------------


def write_checkpoint(path: str, model: torch.nn.Module, config: M.ModelConfig, protocol: M.Protocol,
                     seed: int) -> None:
    """The state_dict as an `mman-checkpoint/1` file (include/mman/train/checkpoint.h):
    one float32 dataset per parameter at the root, named exactly as in the state_dict,
    and the root attributes schema, model_type, model_name, config, protocol, epoch,
    seed, metrics."""
    with h5py.File(path, "w") as f:
        f.attrs["schema"] = "mman-checkpoint/1"
        f.attrs["model_type"] = config.type
        f.attrs["model_name"] = config.name
        f.attrs["config"] = json.dumps(asdict(config))
        f.attrs["protocol"] = protocol.name
        f.attrs["epoch"] = 0
        f.attrs["seed"] = seed
        f.attrs["metrics"] = "{}"
        for name, value in model.state_dict().items():
            f.create_dataset(name, data=value.detach().cpu().float().numpy())


# ---------------------------------------------------------------------------------------
# expected.h5
# ---------------------------------------------------------------------------------------


def mma_of(model: torch.nn.Module):
    if isinstance(model, M.CLSTMMMA):
        return model
    if isinstance(model, M.MMAN):
        return next((s for s in model.subnets.values() if isinstance(s, M.CLSTMMMA)), None)
    return None


def make_trained_looking(model: torch.nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initialisation gives near-uniform softmax outputs and near-uniform
    attention, which would test little of what follows them. Sharpen, as training would:
    the subnets' output layers of a composite (so the fused probabilities vary) and the
    MMA query projections (so alpha is far from 1/3)."""
    with torch.no_grad():
        if isinstance(model, M.FusionModel):
            for net in model.subnets.values():
                head = net.clstm.out if isinstance(net, M.CLSTMMMA) else net.out
                head.weight.mul_(12.0)
                head.bias.uniform_(-1.0, 1.0, generator=generator)
        mma = mma_of(model)
        if mma is not None:
            gain = 2.0 if mma.mma.score == "cosine" else 4.0  # cosine scores are bounded anyway
            for q in mma.mma.q.values():
                q.weight.mul_(gain)


def run_case(model: torch.nn.Module, batch: M.PaddedBatch, n: int, dtype: torch.dtype) -> dict:
    """Evaluation forward, loss and attention, then TRAIN_STEPS Adam steps; results in
    dataset utterance order."""
    model = model.to(dtype)
    batch = replace(batch, inputs={m: x.to(dtype) for m, x in batch.inputs.items()})
    heads = model.heads
    out = {}
    model.eval()
    with torch.no_grad():
        logits = model(batch.inputs, batch.lengths)
        out["logits"] = M.per_utterance(logits, batch, n)
        out["loss"] = float(M.masked_cross_entropy(logits, batch.targets, heads))
        mma = mma_of(model)
        if mma is not None:
            out["attention"] = M.per_utterance(mma.attention.flatten(-2), batch, n)
    optimizer = M.make_optimizer(model, LR)
    losses, norms = [], []
    for _ in range(TRAIN_STEPS):
        loss, norm = M.train_step(model, optimizer, batch, clip_norm=CLIP_NORM)
        losses.append(loss)
        norms.append(norm)
    model.eval()
    with torch.no_grad():
        out["final_loss"] = float(M.masked_cross_entropy(model(batch.inputs, batch.lengths), batch.targets, heads))
    out["losses"], out["grad_norms"] = np.array(losses), np.array(norms)
    return out


def normalised_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-3))


def make_case(out_dir: str, name: str, ds: M.Dataset, seed: int) -> None:
    overrides, protocol_name = CASES[name]
    config = M.ModelConfig(**overrides).resolved().without_dropout()
    protocol = M.make_protocol(protocol_name, ds.label_names)
    torch.manual_seed(seed)
    model = M.build_model(config, ds.dims, protocol.num_outputs, protocol.heads)
    make_trained_looking(model, torch.Generator().manual_seed(seed + 1))
    if isinstance(model, M.FusionModel):
        model.freeze_subnets()  # stage 2: only the fusion head / top cLSTM trains

    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    write_checkpoint(os.path.join(out_dir, name, "model.h5"), model, config, protocol, seed)

    batch = M.make_padded_batch(ds, protocol, range(len(ds.conv_ids)))
    n = len(ds.labels)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    r32 = run_case(model, batch, n, torch.float32)
    model.load_state_dict(state)
    r64 = run_case(model, batch, n, torch.float64)
    float32_error = max(normalised_error(r32[k], r64[k]) for k in ("logits", "losses", "final_loss"))
    if "attention" in r32:
        float32_error = max(float32_error, normalised_error(r32["attention"], r64["attention"]))

    with h5py.File(os.path.join(out_dir, name, "expected.h5"), "w") as f:
        f.attrs["case"] = name
        f.attrs["model_type"] = config.type
        f.attrs["protocol"] = protocol.name
        f.attrs["float32_error"] = float32_error
        f.create_dataset("logits", data=r32["logits"])
        f.create_dataset("loss", data=r32["loss"])
        if "attention" in r32:
            f.create_dataset("attention", data=r32["attention"])
        f.create_dataset("train/losses", data=r32["losses"])
        f.create_dataset("train/final_loss", data=r32["final_loss"])
        f.create_dataset("train/grad_norms", data=r32["grad_norms"])
    print(f"{name:26s} loss {r32['loss']:.6f} train {np.array2string(r32['losses'], precision=6)} "
          f"final {r32['final_loss']:.6f} float32 error {float32_error:.1e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="folder to write into (created if missing)")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="a case (default: all)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    if not args.out:
        parser.error("--out is required")
    torch.set_num_threads(1)  # the test machine's cores are shared; results do not depend on it
    M.self_check(verbose=False)  # parameter counts of SPEC section 2: the reference is the right network
    os.makedirs(args.out, exist_ok=True)
    data_path = os.path.join(args.out, "data.h5")
    write_dataset(data_path, args.seed)
    ds = M.read_dataset(data_path)
    for name in args.case or CASES:
        make_case(args.out, name, ds, args.seed + 17 * list(CASES).index(name))  # per case, order-free
    return 0


if __name__ == "__main__":
    sys.exit(main())
