#!/usr/bin/python3
"""Converts IEMOCAP_features_raw.pkl (bc-LSTM / conv-emotion features) to an mman-dataset/1 HDF5 file.

Usage:
    /usr/bin/python3 tools/convert_iemocap.py IEMOCAP_features_raw.pkl iemocap.h5
    /usr/bin/python3 tools/convert_iemocap.py IEMOCAP_features_raw.pkl --check   # counts only

The pickle (written by Python 2, hence read with encoding='latin1') is the 9-tuple
    (videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual,
     videoSentence, trainVid, testVid)
where the first seven are dicts keyed by conversation id ("Ses01F_impro01") holding one
entry per utterance: utterance ids, speakers ('M'/'F'), labels (hap 0, sad 1, neu 2,
ang 3, exc 4, fru 5), text (100-d), audio (100-d openSMILE) and visual (512-d 3D-CNN)
features and transcripts; trainVid/testVid list the conversations of each split.

Output (SPEC section 1): root attributes schema, label_names, modalities; float32
/features/{audio,visual,text}; int32 /labels; variable-length UTF-8 /speakers
("Ses01_F": session and gender, i.e. the actor), /utterance_ids; /conversations/ids,
/conversations/offsets (int64), /conversations/sessions ("Ses01" from the id prefix);
/splits/train and /splits/test (sorted ids). The file is written under a temporary
name in the same folder and renamed into place, so a failure leaves no partial file.
Every problem is reported as one line on stderr with exit code 1.
"""
import argparse
import os
import pickle
import re
import sys
import tempfile

SCHEMA = "mman-dataset/1"
LABEL_NAMES = ["hap", "sad", "neu", "ang", "exc", "fru"]
MODALITIES = ["audio", "visual", "text"]
TUPLE_FIELDS = ["videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoVisual",
                "videoSentence", "trainVid", "testVid"]
FEATURE_FIELD = {"audio": "videoAudio", "visual": "videoVisual", "text": "videoText"}
SESSION_RE = re.compile(r"^(Ses\d\d)")


class ConvertError(Exception):
    """A problem with the input; printed as one line."""


def text(value):
    """A pickle string (str, or bytes from a Python 2 str) as str."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    return None


def load_pickle(path):
    if not os.path.exists(path):
        raise ConvertError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ConvertError(f"{path}: is a folder, expected IEMOCAP_features_raw.pkl")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except MemoryError:
        raise ConvertError(f"{path}: not a readable pickle (out of memory while loading)")
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... on damaged or foreign files
        raise ConvertError(f"{path}: not a readable pickle ({type(e).__name__}: {e})".replace("\n", " "))
    if not isinstance(data, (tuple, list)):
        raise ConvertError(f"{path}: expected a tuple of {len(TUPLE_FIELDS)} items ({', '.join(TUPLE_FIELDS)}), "
                           f"found {type(data).__name__}")
    if len(data) != len(TUPLE_FIELDS):
        raise ConvertError(f"{path}: expected a tuple of {len(TUPLE_FIELDS)} items ({', '.join(TUPLE_FIELDS)}), "
                           f"found {len(data)} items")
    return dict(zip(TUPLE_FIELDS, data))


def conversation_lists(path, fields):
    for name in TUPLE_FIELDS[:7]:
        if not isinstance(fields[name], dict):
            raise ConvertError(f"{path}: {name}: expected a dict keyed by conversation id, found "
                               f"{type(fields[name]).__name__}")
    splits = {}
    for split, name in (("train", "trainVid"), ("test", "testVid")):
        value = fields[name]
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ConvertError(f"{path}: {name}: expected a list or set of conversation ids, found "
                               f"{type(value).__name__}")
        ids = []
        for v in value:
            t = text(v)
            if t is None:
                raise ConvertError(f"{path}: {name}: conversation id {v!r} is not a string")
            ids.append(t)
        if len(set(ids)) != len(ids):
            raise ConvertError(f"{path}: {name}: a conversation id is listed twice")
        if not ids:
            raise ConvertError(f"{path}: {name}: no conversations")
        splits[split] = sorted(ids)
    both = set(splits["train"]) & set(splits["test"])
    if both:
        raise ConvertError(f"{path}: conversation {sorted(both)[0]} is in both trainVid and testVid")
    return splits


def as_matrix(path, field, conv, value, np):
    if isinstance(value, (list, tuple)):
        sizes = [np.size(v) for v in value]
        for i, size in enumerate(sizes):
            if size != sizes[0]:
                raise ConvertError(f"{path}: {field}[{conv}]: utterance {i} has {size}-d features, utterance 0 has "
                                   f"{sizes[0]}-d")
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConvertError(f"{path}: {field}[{conv}]: not numeric features ({e})")
    if m.ndim != 2:
        raise ConvertError(f"{path}: {field}[{conv}]: expected one feature vector per utterance (a 2-D array), "
                           f"found shape {m.shape}")
    return m


def convert(path, np):
    """Reads and checks the pickle; returns the dataset as plain Python/numpy values."""
    fields = load_pickle(path)
    splits = conversation_lists(path, fields)
    convs = splits["train"] + splits["test"]
    for conv in convs:
        for name in TUPLE_FIELDS[:7]:
            if conv not in fields[name]:
                which = "trainVid" if conv in splits["train"] else "testVid"
                raise ConvertError(f"{path}: {name}: missing conversation {conv} (listed in {which})")
        if not SESSION_RE.match(conv):
            raise ConvertError(f"{path}: conversation id {conv!r} does not start with a session name like 'Ses01'")

    out = {"conv_ids": convs, "sessions": [], "offsets": [0], "utterance_ids": [], "speakers": [], "labels": [],
           "features": {m: [] for m in MODALITIES}, "splits": splits}
    dims = {}
    for conv in convs:
        session = SESSION_RE.match(conv).group(1)
        ids = list(fields["videoIDs"][conv])
        n = len(ids)
        if n == 0:
            raise ConvertError(f"{path}: videoIDs[{conv}]: empty conversation")
        for name in ("videoSpeakers", "videoLabels", "videoSentence"):
            try:
                length = len(fields[name][conv])
            except TypeError:
                raise ConvertError(f"{path}: {name}[{conv}]: expected a list, found {type(fields[name][conv]).__name__}")
            if length != n:
                raise ConvertError(f"{path}: {name}[{conv}]: {length} utterances, but videoIDs has {n}")
        for i, uid in enumerate(ids):
            t = text(uid)
            if t is None:
                raise ConvertError(f"{path}: videoIDs[{conv}][{i}]: utterance id {uid!r} is not a string")
            out["utterance_ids"].append(t)
        for i, spk in enumerate(fields["videoSpeakers"][conv]):
            t = text(spk)
            if t not in ("M", "F"):
                raise ConvertError(f"{path}: videoSpeakers[{conv}][{i}]: expected 'M' or 'F', found {spk!r}")
            out["speakers"].append(f"{session}_{t}")
        for i, label in enumerate(fields["videoLabels"][conv]):
            ok = isinstance(label, (int, np.integer)) or (isinstance(label, (float, np.floating)) and float(label).is_integer())
            if not ok or not 0 <= int(label) < len(LABEL_NAMES):
                raise ConvertError(f"{path}: videoLabels[{conv}][{i}]: label {label!r} is not one of 0..5 "
                                   f"({', '.join(LABEL_NAMES)})")
            out["labels"].append(int(label))
        for m in MODALITIES:
            field = FEATURE_FIELD[m]
            x = as_matrix(path, field, conv, fields[field][conv], np)
            if x.shape[0] != n:
                raise ConvertError(f"{path}: {field}[{conv}]: {x.shape[0]} utterances, but videoIDs has {n}")
            if m in dims and x.shape[1] != dims[m][0]:
                raise ConvertError(f"{path}: {field}[{conv}]: {x.shape[1]}-d features, but {dims[m][1]} has "
                                   f"{dims[m][0]}-d")
            dims.setdefault(m, (x.shape[1], conv))
            if x.shape[1] == 0:
                raise ConvertError(f"{path}: {field}[{conv}]: zero-width features")
            bad = ~np.isfinite(x)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise ConvertError(f"{path}: {field}[{conv}]: utterance {r} ({out['utterance_ids'][-n + r]}) has a "
                                   f"non-finite value ({x[r, c]}) in dimension {c}")
            too_big = np.abs(x) > np.finfo(np.float32).max
            if too_big.any():
                r, c = np.argwhere(too_big)[0]
                raise ConvertError(f"{path}: {field}[{conv}]: utterance {r} value {x[r, c]} does not fit float32")
            out["features"][m].append(x.astype(np.float32))
        out["sessions"].append(session)
        out["offsets"].append(out["offsets"][-1] + n)
    if len(set(out["utterance_ids"])) != len(out["utterance_ids"]):
        seen = set()
        dup = next(u for u in out["utterance_ids"] if u in seen or seen.add(u))
        raise ConvertError(f"{path}: videoIDs: utterance id {dup} appears twice")
    out["features"] = {m: np.concatenate(out["features"][m], axis=0) for m in MODALITIES}
    return out


def write_h5(out, dest, source_name, np, h5py):
    folder = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(folder):
        raise ConvertError(f"{dest}: the folder {folder} does not exist")
    if os.path.isdir(dest):
        raise ConvertError(f"{dest}: is a folder; give the HDF5 file to write")
    try:
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(dest) + ".", suffix=".tmp", dir=folder)
        os.close(fd)
    except OSError as e:
        raise ConvertError(f"{dest}: cannot write: {e.strerror}")
    string = h5py.string_dtype("utf-8")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = SCHEMA
            f.attrs.create("label_names", LABEL_NAMES, dtype=string)
            f.attrs.create("modalities", MODALITIES, dtype=string)
            f.attrs["converted_from"] = f"{source_name} (tools/convert_iemocap.py)"
            for m in MODALITIES:
                f.create_dataset(f"features/{m}", data=out["features"][m], dtype=np.float32)
            f.create_dataset("labels", data=np.asarray(out["labels"], dtype=np.int32))
            f.create_dataset("speakers", data=out["speakers"], dtype=string)
            f.create_dataset("utterance_ids", data=out["utterance_ids"], dtype=string)
            f.create_dataset("conversations/ids", data=out["conv_ids"], dtype=string)
            f.create_dataset("conversations/offsets", data=np.asarray(out["offsets"], dtype=np.int64))
            f.create_dataset("conversations/sessions", data=out["sessions"], dtype=string)
            for split, ids in out["splits"].items():
                f.create_dataset(f"splits/{split}", data=ids, dtype=string)
        os.replace(tmp, dest)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ConvertError(f"{dest}: cannot write: {e}")
        raise


def print_counts(out, np):
    """Utterances per raw label and split, and per iemocap4 class (Table 1 of the paper)."""
    labels = np.asarray(out["labels"])
    offsets = out["offsets"]
    index = {c: i for i, c in enumerate(out["conv_ids"])}
    rows = []
    for split in ("train", "test"):
        convs = [index[c] for c in out["splits"][split]]
        lab = np.concatenate([labels[offsets[c]:offsets[c + 1]] for c in convs])
        rows.append((split, len(convs), np.bincount(lab, minlength=len(LABEL_NAMES))))
    head = ["split", "dialogues"] + LABEL_NAMES + ["total"]
    print(("{:<6}" + "{:>10}" + "{:>6}" * len(LABEL_NAMES) + "{:>7}").format(*head))
    for split, nconv, counts in rows:
        print(("{:<6}" + "{:>10}" + "{:>6}" * len(LABEL_NAMES) + "{:>7}").format(split, nconv, *counts, counts.sum()))
    print("iemocap4 (hap+exc -> happy, sad+fru -> sad, neu -> neutral, ang -> angry):")
    print("{:<6}{:>10}{:>8}{:>8}{:>8}{:>8}".format("split", "dialogues", "happy", "sad", "neutral", "angry"))
    for split, nconv, c in rows:
        print("{:<6}{:>10}{:>8}{:>8}{:>8}{:>8}".format(split, nconv, c[0] + c[4], c[1] + c[5], c[2], c[3]))
    dims = ", ".join(f"{m} {out['features'][m].shape[1]}" for m in MODALITIES)
    print(f"dimensions: {dims}")


def main(argv):
    parser = argparse.ArgumentParser(
        prog="convert_iemocap.py",
        description="Convert IEMOCAP_features_raw.pkl (bc-LSTM / conv-emotion) to an mman-dataset/1 HDF5 file.")
    parser.add_argument("pickle", help="IEMOCAP_features_raw.pkl")
    parser.add_argument("out", nargs="?", help="HDF5 file to write (optional with --check)")
    parser.add_argument("--check", action="store_true",
                        help="print utterances per label and split (as Table 1 of the paper)")
    args = parser.parse_args(argv)
    if args.out is None and not args.check:
        parser.error("give the output file, or --check to only count")
    try:
        import numpy as np
    except ImportError:
        raise ConvertError("numpy is not installed for this interpreter (use Debian's /usr/bin/python3)")
    out = convert(args.pickle, np)
    if args.check:
        print_counts(out, np)
    if args.out is not None:
        try:
            import h5py
        except ImportError:
            raise ConvertError("h5py is not installed for this interpreter (use Debian's /usr/bin/python3)")
        write_h5(out, args.out, os.path.basename(args.pickle), np, h5py)
        n = len(out["labels"])
        print(f"wrote {args.out}: {len(out['conv_ids'])} conversations (train {len(out['splits']['train'])}, "
              f"test {len(out['splits']['test'])}), {n} utterances, "
              + ", ".join(f"{m} {out['features'][m].shape[1]}" for m in MODALITIES))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ConvertError as e:
        print(f"convert_iemocap.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("convert_iemocap.py: interrupted", file=sys.stderr)
        sys.exit(1)
