"""Writes a PyTorch model's state_dict as an mman-checkpoint/1 file with h5py, the way
a researcher would, plus its per-utterance probabilities on a dataset for comparison.

    python3 write_torch_checkpoint.py MODEL_TYPE DATASET.h5 OUT.h5 PROBS.npy [--config-json]

The model has SPEC default sizes and PyTorch's own random initialisation (seed 0). With
--config-json the `config` attribute holds {"type": MODEL_TYPE} as JSON; without it the
file has only `schema` and `model_type`. Exit 3 when torch or h5py cannot be imported.
"""

import json
import os
import sys

try:
    import h5py
    import numpy as np
    import torch
except ImportError as e:  # the caller skips
    print(f"cannot import torch/h5py: {e}", file=sys.stderr)
    sys.exit(3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mman_torch as mt  # noqa: E402


def main(argv):
    model_type, data_path, out_path, probs_path = argv[1:5]
    with_config = "--config-json" in argv
    torch.manual_seed(0)
    ds = mt.read_dataset(data_path)
    protocol = mt.make_protocol("iemocap4", ds.label_names)
    dims = {m: ds.features[m].shape[1] for m in ds.modalities}
    model = mt.build_model(mt.ModelConfig(type=model_type).resolved(), dims, len(protocol.class_names))
    model.eval()
    with h5py.File(out_path, "w") as f:
        f.attrs["schema"] = "mman-checkpoint/1"
        f.attrs["model_type"] = model_type
        if with_config:
            f.attrs["config"] = json.dumps({"type": model_type})
        for name, value in model.state_dict().items():
            f.create_dataset(name, data=value.detach().cpu().float().numpy())
    # Probabilities of every utterance, raw (unnormalised) features, all conversations.
    with torch.no_grad():
        batch = mt.make_padded_batch(ds, protocol, list(range(len(ds.conv_ids))))
        logits = model(batch.inputs, batch.lengths)
        probs = mt.head_softmax(logits, 1)
        np.save(probs_path, mt.per_utterance(probs, batch, len(ds.labels)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
