#!/usr/bin/python3
"""Writes a small pickle shaped like IEMOCAP_features_raw.pkl, as Python 2 would have written it.

Used by tests/test_convert_iemocap.cpp:
    make_fake_iemocap_pickle.py SPEC.json OUT.pkl

SPEC.json: {"convs": [{"id": "Ses01F_impro01", "speakers": "FMFF", "labels": [0, 4, 2, 5],
                       "split": "train"}, ...],
            "dims": {"audio": 100, "visual": 512, "text": 100},
            "mutate": "none" | "tuple8" | "missing_audio" | "short_labels" | "nan" |
                      "bad_label" | "bad_speaker" | "ragged_text" | "in_both_splits"}

Features follow a formula the test recomputes: utterance u (0-based within its
conversation) of the k-th conversation of the spec (0-based), dimension j of modality
m (audio 0, visual 1, text 2) holds 1000 * (m + 1) + 64 * k + u + j / 1024 (exact in
float32). Strings are pickled as Python 2 byte strings (protocol 2 BINSTRING opcodes),
so only encoding='latin1' reads them, as with the real file; numpy arrays, lists of
arrays, a set (trainVid) and a list (testVid) appear as in the original.
"""
import json
import pickle
import struct
import sys

import numpy as np


class Python2Pickler(pickle._Pickler):
    """Protocol 2 with str saved as Python 2 str (latin-1 bytes), not unicode."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str


def feature(m, k, u, dim):
    return 1000.0 * (m + 1) + 64.0 * k + u + np.arange(dim, dtype=np.float64) / 1024.0


def main(spec_path, out_path):
    with open(spec_path) as f:
        spec = json.load(f)
    dims = spec["dims"]
    mutate = spec.get("mutate", "none")
    ids, speakers, labels, text, audio, visual, sentence = {}, {}, {}, {}, {}, {}, {}
    train, test = set(), []
    for k, conv in enumerate(spec["convs"]):
        cid = conv["id"]
        n = len(conv["labels"])
        assert len(conv["speakers"]) == n
        counters = {"F": 0, "M": 0}
        utt = []
        for s in conv["speakers"]:
            utt.append(f"{cid}_{s}{counters[s]:03d}")
            counters[s] += 1
        ids[cid] = utt
        speakers[cid] = list(conv["speakers"])
        labels[cid] = list(conv["labels"])
        # As in the original: text a list of 1-D arrays, audio a 2-D array, visual a list of lists.
        text[cid] = [feature(2, k, u, dims["text"]) for u in range(n)]
        audio[cid] = np.stack([feature(0, k, u, dims["audio"]) for u in range(n)])
        visual[cid] = [list(feature(1, k, u, dims["visual"])) for u in range(n)]
        sentence[cid] = [f"utterance {u} caf\u00e9" for u in range(n)]  # latin-1, not ASCII
        (train.add(cid) if conv["split"] == "train" else test.append(cid))

    first = spec["convs"][0]["id"]
    if mutate == "missing_audio":
        del audio[first]
    elif mutate == "short_labels":
        labels[first] = labels[first][:-1]
    elif mutate == "nan":
        audio[first][1, 3] = float("nan")
    elif mutate == "bad_label":
        labels[first][0] = 6
    elif mutate == "bad_speaker":
        speakers[first][0] = "X"
    elif mutate == "ragged_text":
        text[first][1] = text[first][1][:-1]
    elif mutate == "in_both_splits":
        test.append(next(iter(sorted(train))))
    elif mutate not in ("none", "tuple8"):
        raise SystemExit(f"unknown mutation {mutate}")

    data = (ids, speakers, labels, text, audio, visual, sentence, train, test)
    if mutate == "tuple8":
        data = data[:8]
    with open(out_path, "wb") as f:
        Python2Pickler(f, protocol=2).dump(data)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
