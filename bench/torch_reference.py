"""PyTorch side of the speed benchmark: one training epoch and test-split evaluation of a
model, written the way a researcher writes it in PyTorch, on the same data as mman_bench.

    /usr/bin/python3 bench/torch_reference.py --data iemocap_synth.h5 --model clstm_speech --threads 2

The models are the idiomatic reference of tests/torch/mman_torch.py (zero-padded
time-major conversation batches, nn.LSTM on packed sequences, masked cross-entropy,
torch.optim.Adam): imported, not rewritten. The training loop mirrors mman's trainer
(SPEC section 2): features standardised with the training split's mean and population
deviation, conversation order shuffled, 10 conversations per batch, dropout as
configured, gradient clipping by global norm 5, Adam (lr 1e-3). Composite models
(clstm_lf, mman) time their stage 2 like mman_bench: sub-networks frozen in evaluation
mode, only the fusion part trains. No validation split (every train conversation
trains), as in mman_bench.

Prints one JSON object (the same keys as mman_bench): epoch_seconds, epoch_cpu_seconds,
eval_utterances_per_second (test split, no_grad, eval mode), peak_rss_mib (of this
process, including the interpreter and torch), threads, parameters, train_utterances.
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "torch"))

import torch  # noqa: E402

import mman_torch as mt  # noqa: E402


def normalise(ds: "mt.Dataset", train_convs) -> None:
    """In place, like mman::Normalizer: mean and population deviation of the training
    conversations' utterances, in double; a (nearly) constant feature is only centred."""
    rows = np.concatenate([np.asarray(ds.conversation(c)) for c in train_convs])
    for m in ds.modalities:
        x = ds.features[m]
        sub = x[rows].astype(np.float64)
        mu = sub.mean(axis=0)
        sd = np.sqrt(((sub - mu) ** 2).mean(axis=0))
        sd = np.where(sd > 1e-6 * np.maximum(1.0, np.abs(mu)), sd, 1.0)
        ds.features[m] = ((x - mu.astype(np.float32)) / sd.astype(np.float32)).astype(np.float32)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="mman-dataset/1 file (mman_exp synth --preset iemocap --seed 0)")
    ap.add_argument("--model", default="clstm_speech", choices=mt.MODEL_TYPES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs (the mean is reported)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed epochs first")
    ap.add_argument("--batch", type=int, default=10, help="conversations per batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clip-norm", type=float, default=5.0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    ds = mt.read_dataset(args.data)
    protocol = mt.make_protocol("iemocap4", ds.label_names)
    index = {cid: i for i, cid in enumerate(ds.conv_ids)}
    train = [index[c] for c in ds.splits["train"]]
    test = [index[c] for c in ds.splits["test"]]
    normalise(ds, train)

    model = mt.build_model(mt.ModelConfig(type=args.model), ds.dims, protocol.num_outputs, protocol.heads)
    if isinstance(model, mt.FusionModel):
        model.freeze_subnets(True)  # stage 2: sub-networks trained already, frozen
    optimizer = mt.make_optimizer(model)
    params = [p for p in model.parameters() if p.requires_grad]

    cpu_seconds = []  # process CPU time of each epoch (all threads): barely affected by machine load

    def epoch() -> float:
        start = time.perf_counter()
        cpu_start = time.process_time()
        model.train()
        order = rng.permutation(train)
        for i in range(0, len(order), args.batch):
            batch = mt.make_padded_batch(ds, protocol, order[i:i + args.batch])
            if not bool((batch.targets >= 0).any()):
                continue  # nothing to learn from, as mman's trainer
            optimizer.zero_grad(set_to_none=True)
            logits = model(batch.inputs, batch.lengths)
            loss = mt.masked_cross_entropy(logits, batch.targets, protocol.heads)
            loss.backward()
            if args.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, args.clip_norm)
            optimizer.step()
        cpu_seconds.append(time.process_time() - cpu_start)
        return time.perf_counter() - start

    for _ in range(args.warmup):
        epoch()
    epoch_seconds = sum(epoch() for _ in range(args.epochs)) / args.epochs

    # Evaluation throughput: the test split in batches, logits and class probabilities.
    model.eval()
    start = time.perf_counter()
    scored = 0
    with torch.no_grad():
        for i in range(0, len(test), args.batch):
            batch = mt.make_padded_batch(ds, protocol, test[i:i + args.batch])
            probs = mt.head_softmax(model(batch.inputs, batch.lengths), protocol.heads)
            scored += int((batch.utterance >= 0).sum())
            probs.argmax(-1)
    eval_seconds = time.perf_counter() - start

    train_utts = sum(len(ds.conversation(c)) for c in train)
    print(json.dumps({
        "impl": "pytorch",
        "torch_version": torch.__version__,
        "model": args.model,
        "threads": args.threads,
        "parameters": mt.count_parameters(model),
        "train_utterances": train_utts,
        "epoch_seconds": epoch_seconds,
        "epoch_cpu_seconds": sum(cpu_seconds[args.warmup:]) / args.epochs,
        "eval_utterances_per_second": scored / eval_seconds,
        "peak_rss_mib": peak_rss_mib(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
