"""PyTorch reference implementation of the mman models (SPEC section 2).

The networks of "Multi-modal Attention for Speech Emotion Recognition" (Pan et al.,
Interspeech 2020) written the way a researcher writes them in PyTorch: conversations
as zero-padded, time-major batches [T x B x d] with their lengths, nn.LSTM over packed
sequences, a masked cross-entropy and torch.optim.Adam. State-dict names are exactly
the parameter names of mman's `mman-checkpoint/1` files, so weights move between the
two implementations name by name.

Used by tests/torch/make_parity_fixture.py (the C++ parity tests) and by the speed
benchmark. `python3 mman_torch.py` runs a self-check (parameter counts of SPEC
section 2, packing and masking invariants).
"""

import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

MODALITIES = ("audio", "visual", "text")
IEMOCAP_DIMS = {"audio": 100, "visual": 512, "text": 100}
IEMOCAP_LABELS = ("hap", "sad", "neu", "ang", "exc", "fru")
# The uni-modal networks and the modality each one reads.
UNIMODAL = {"clstm_speech": "audio", "clstm_visual": "visual", "clstm_text": "text"}
MODEL_TYPES = ("clstm_speech", "clstm_visual", "clstm_text", "clstm_ef", "clstm_lf", "clstm_mma", "mman")


# ---------------------------------------------------------------------------------------
# Configuration (mirrors mman::ModelConfig, include/mman/models/model.h)
# ---------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    type: str
    name: str = ""                      # instance name; subnets live under subnets.<name>.
    modalities: List[str] = field(default_factory=list)  # empty = the type's default
    hidden: int = 300
    lstm_layers: int = -1               # -1 = 2 for uni-modal/EF, 1 for LF/MMA
    lstm_dropout: float = 0.5
    bidirectional: bool = False
    fc: int = 200
    dropout: float = 0.5
    d_model: int = 150
    mma_dropout: float = 0.1
    score: str = "scaled_dot"           # scaled_dot | cosine
    skip: str = "residual"              # residual | concat
    subnets: List["ModelConfig"] = field(default_factory=list)  # clstm_lf, mman; empty = default

    def resolved(self) -> "ModelConfig":
        """Fills the type's defaults (name, modalities, LSTM layers, sub-networks)."""
        if self.type not in MODEL_TYPES:
            raise ValueError(f"unknown model type '{self.type}' (expected one of {', '.join(MODEL_TYPES)})")
        c = replace(self)
        c.name = c.name or c.type
        if not c.modalities:
            if c.type in UNIMODAL:
                c.modalities = [UNIMODAL[c.type]]
            elif c.type in ("clstm_ef", "clstm_mma"):
                c.modalities = list(MODALITIES)
        if c.lstm_layers < 0:
            c.lstm_layers = 1 if c.type in ("clstm_lf", "clstm_mma") else 2
        if c.type in ("clstm_lf", "mman") and not c.subnets:
            names = list(UNIMODAL) if c.type == "clstm_lf" else ["clstm_mma", *UNIMODAL]
            c.subnets = [ModelConfig(type=n) for n in names]
        c.subnets = [s.resolved() for s in c.subnets]
        return c

    def without_dropout(self) -> "ModelConfig":
        """The same network with every dropout probability set to zero."""
        return replace(self, lstm_dropout=0.0, dropout=0.0, mma_dropout=0.0,
                       subnets=[s.without_dropout() for s in self.subnets])


# ---------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------


class CLSTMBlock(nn.Module):
    """Contextual LSTM block (Poria et al. 2017): LSTM -> ReLU -> dropout -> fc -> ReLU
    -> dropout -> out, logits at every utterance of every conversation."""

    def __init__(self, input_size: int, num_outputs: int, hidden: int = 300, layers: int = 2,
                 lstm_dropout: float = 0.5, fc: int = 200, dropout: float = 0.5,
                 bidirectional: bool = False):
        super().__init__()
        # nn.LSTM applies its dropout between stacked layers only (and warns for 1 layer).
        self.lstm = nn.LSTM(input_size, hidden, layers, dropout=lstm_dropout if layers > 1 else 0.0,
                            bidirectional=bidirectional)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), fc)
        self.out = nn.Linear(fc, num_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: [T x B x d] zero-padded, lengths: [B] -> logits [T x B x num_outputs]
        (rows beyond a conversation's length are garbage; the loss masks them)."""
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        h, _ = self.lstm(packed)  # h_0 = c_0 = 0 for every conversation
        h, _ = pad_packed_sequence(h, total_length=x.shape[0])
        h = self.drop(F.relu(h))
        h = self.drop(F.relu(self.fc(h)))
        return self.out(h)


def cosine_scores(q: torch.Tensor, k: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """cos(q_m, k_n) for every pair: q, k [..., M, D] -> [..., M, M]. torch 1.13's
    cosine_similarity computes q·k / (max(|q|, eps) * max(|k|, eps)) (its docstring's
    max(|q| |k|, eps) is out of date), which is what mman's Mma mirrors."""
    return F.cosine_similarity(q.unsqueeze(-2), k.unsqueeze(-3), dim=-1, eps=eps)


class MultiModalAttention(nn.Module):
    """Multi-modal attention (Section 2.1): per-modality standardisation to d_model, one
    query projection per modality, keys and values shared by the three directional
    modules, a softmax over the key modalities and a skip connection."""

    def __init__(self, dims: Dict[str, int], d_model: int = 150, dropout: float = 0.1,
                 score: str = "scaled_dot", skip: str = "residual"):
        super().__init__()
        if score not in ("scaled_dot", "cosine"):
            raise ValueError(f"unknown MMA score '{score}'")
        if skip not in ("residual", "concat"):
            raise ValueError(f"unknown MMA skip '{skip}'")
        self.modalities = list(dims)
        self.d_model, self.score, self.skip = d_model, score, skip
        self.std = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in dims.items()})
        self.q = nn.ModuleDict({m: nn.Linear(d_model, d_model) for m in dims})
        self.k = nn.ModuleDict({m: nn.Linear(d_model, d_model) for m in dims})
        self.v = nn.ModuleDict({m: nn.Linear(d_model, d_model) for m in dims})
        self.drop_std = nn.Dropout(dropout)
        self.drop_z = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return len(self.modalities) * self.d_model * (2 if self.skip == "concat" else 1)

    def forward(self, inputs: Dict[str, torch.Tensor]):
        """inputs: modality -> [..., d_m]. Returns (out [..., output_dim], alpha [..., M, M])
        with alpha[..., m, n] the weight of key modality n for query modality m."""
        mods = self.modalities
        x = torch.stack([self.drop_std(F.relu(self.std[m](inputs[m]))) for m in mods], dim=-2)
        q = torch.stack([self.q[m](x[..., i, :]) for i, m in enumerate(mods)], dim=-2)
        k = torch.stack([self.k[m](x[..., i, :]) for i, m in enumerate(mods)], dim=-2)
        v = torch.stack([self.v[m](x[..., i, :]) for i, m in enumerate(mods)], dim=-2)
        if self.score == "scaled_dot":
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_model)  # Eq. 4, d_k = d_model
        else:
            scores = cosine_scores(q, k)
        alpha = torch.softmax(scores, dim=-1)
        z = alpha @ v
        if self.skip == "residual":
            out = x + self.drop_z(z)
        else:
            out = torch.cat([x, z], dim=-1)  # [x̂_m; z_m] per modality
        return out.flatten(-2), alpha


def head_softmax(logits: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax over the classes (heads == 1) or over each 2-way head (binary4)."""
    if heads == 1:
        return torch.softmax(logits, dim=-1)
    shape = logits.shape
    return torch.softmax(logits.reshape(*shape[:-1], heads, 2), dim=-1).reshape(shape)


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, heads: int = 1) -> torch.Tensor:
    """Mean cross-entropy over the labelled utterances (targets >= 0); padding and
    context-only utterances carry -1. heads > 1 (binary4): head k is the 2-way task
    "class k or not" on columns 2k, 2k+1, and the loss is the mean over heads and
    labelled utterances."""
    if heads == 1:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1)
    flat = logits.reshape(-1, heads, 2)
    t = targets.reshape(-1)
    keep = t >= 0
    flat, t = flat[keep], t[keep]
    head_targets = (t.unsqueeze(1) == torch.arange(heads, device=t.device).unsqueeze(0)).long()
    return F.cross_entropy(flat.reshape(-1, 2), head_targets.reshape(-1))


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------


class CLSTM(CLSTMBlock):
    """clstm_speech / clstm_visual / clstm_text / clstm_ef: a cLSTM block on one modality
    or on the concatenation of several (early fusion)."""

    def __init__(self, config: ModelConfig, dims: Dict[str, int], num_outputs: int, heads: int = 1):
        c = config
        super().__init__(sum(dims[m] for m in c.modalities), num_outputs, c.hidden, c.lstm_layers,
                         c.lstm_dropout, c.fc, c.dropout, c.bidirectional)
        self.modalities = list(c.modalities)
        self.heads = heads

    def forward(self, inputs: Dict[str, torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        x = torch.cat([inputs[m] for m in self.modalities], dim=-1)
        return super().forward(x, lengths)


class CLSTMMMA(nn.Module):
    """clstm_mma: multi-modal attention, then a cLSTM block (one LSTM layer)."""

    def __init__(self, config: ModelConfig, dims: Dict[str, int], num_outputs: int, heads: int = 1):
        super().__init__()
        c = config
        self.mma = MultiModalAttention({m: dims[m] for m in c.modalities}, c.d_model, c.mma_dropout,
                                       c.score, c.skip)
        self.clstm = CLSTMBlock(self.mma.output_dim, num_outputs, c.hidden, c.lstm_layers,
                                c.lstm_dropout, c.fc, c.dropout, c.bidirectional)
        self.heads = heads
        self.attention: Optional[torch.Tensor] = None  # last forward's alpha [T x B x M x M]

    def forward(self, inputs: Dict[str, torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        x, self.attention = self.mma(inputs)
        return self.clstm(x, lengths)


class FusionModel(nn.Module):
    """Shared part of the late-fusion models: sub-networks whose class probabilities
    are concatenated in sub-network order. Stage 2 freezes them: no gradients, and
    evaluation mode even while the fusion head trains."""

    def __init__(self, config: ModelConfig, dims: Dict[str, int], num_outputs: int, heads: int):
        super().__init__()
        self.subnets = nn.ModuleDict({s.name: build_model(s, dims, num_outputs, heads) for s in config.subnets})
        self.heads = heads
        self.frozen = False

    def freeze_subnets(self, frozen: bool = True) -> "FusionModel":
        self.frozen = frozen
        self.subnets.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.subnets.eval()
        return self

    def subnet_probabilities(self, inputs, lengths) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return torch.cat([head_softmax(net(inputs, lengths), self.heads) for net in self.subnets.values()],
                             dim=-1)


class CLSTMLF(FusionModel):
    """clstm_lf: the uni-modal networks' softmax outputs, concatenated, into a cLSTM
    block with one LSTM layer."""

    def __init__(self, config: ModelConfig, dims: Dict[str, int], num_outputs: int, heads: int = 1):
        super().__init__(config, dims, num_outputs, heads)
        c = config
        self.clstm = CLSTMBlock(len(c.subnets) * num_outputs, num_outputs, c.hidden, c.lstm_layers,
                                c.lstm_dropout, c.fc, c.dropout, c.bidirectional)

    def forward(self, inputs, lengths):
        return self.clstm(self.subnet_probabilities(inputs, lengths), lengths)


class MMAN(FusionModel):
    """mman: the sub-networks' softmax outputs, concatenated, into Linear(kC -> C); the
    loss's softmax completes the paper's "dense and softmax layer"."""

    def __init__(self, config: ModelConfig, dims: Dict[str, int], num_outputs: int, heads: int = 1):
        super().__init__(config, dims, num_outputs, heads)
        self.fusion = nn.Linear(len(config.subnets) * num_outputs, num_outputs)

    def forward(self, inputs, lengths):
        return self.fusion(self.subnet_probabilities(inputs, lengths))


def build_model(config: ModelConfig, dims: Dict[str, int], num_outputs: int, heads: int = 1) -> nn.Module:
    """The one factory keyed by type, like mman::make_model. PyTorch's default
    initialisation (U(-1/sqrt(fan_in), +1/sqrt(fan_in)) for Linear and LSTM)."""
    c = config.resolved()
    for m in c.modalities:
        if m not in dims:
            raise ValueError(f"model '{c.name}' reads modality '{m}', the data has {', '.join(dims)}")
    if c.type in UNIMODAL or c.type == "clstm_ef":
        return CLSTM(c, dims, num_outputs, heads)
    if c.type == "clstm_mma":
        return CLSTMMMA(c, dims, num_outputs, heads)
    if c.type == "clstm_lf":
        return CLSTMLF(c, dims, num_outputs, heads)
    return MMAN(c, dims, num_outputs, heads)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------
# Data: `mman-dataset/1` files, label protocols, padded batches
# ---------------------------------------------------------------------------------------


def _strings(values) -> List[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)]


@dataclass
class Dataset:
    label_names: List[str]
    modalities: List[str]
    features: Dict[str, np.ndarray]       # modality -> float32 [N x d]
    labels: np.ndarray                    # int32 [N], -1 unlabelled
    conv_ids: List[str]
    conv_offsets: np.ndarray              # int64 [C + 1]
    splits: Dict[str, List[str]]

    def conversation(self, c: int) -> range:
        return range(int(self.conv_offsets[c]), int(self.conv_offsets[c + 1]))

    @property
    def dims(self) -> Dict[str, int]:
        return {m: int(self.features[m].shape[1]) for m in self.modalities}


def read_dataset(path: str) -> Dataset:
    """Reads an `mman-dataset/1` file (SPEC section 1) with h5py."""
    import h5py
    with h5py.File(path, "r") as f:
        schema = f.attrs["schema"]
        schema = schema.decode() if isinstance(schema, bytes) else str(schema)
        if schema != "mman-dataset/1":
            raise ValueError(f"{path}: schema is '{schema}', expected 'mman-dataset/1'")
        modalities = _strings(f.attrs["modalities"])
        return Dataset(label_names=_strings(f.attrs["label_names"]), modalities=modalities,
                       features={m: f["features"][m][()].astype(np.float32) for m in modalities},
                       labels=f["labels"][()].astype(np.int32),
                       conv_ids=_strings(f["conversations/ids"][()]),
                       conv_offsets=f["conversations/offsets"][()].astype(np.int64),
                       splits={k: _strings(v[()]) for k, v in f["splits"].items()})


@dataclass
class Protocol:
    name: str
    class_names: List[str]
    raw_to_class: List[int]
    heads: int = 1

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) if self.heads == 1 else 2 * self.heads


def make_protocol(name: str, label_names: Sequence[str]) -> Protocol:
    """iemocap4 / iemocap6 / binary4 as in include/mman/data/protocol.h."""
    groups = {
        "iemocap4": (["happy", "sad", "neutral", "angry"],
                     {"hap": 0, "exc": 0, "sad": 1, "fru": 1, "neu": 2, "ang": 3}, 1),
        "iemocap6": (list(IEMOCAP_LABELS), {n: i for i, n in enumerate(IEMOCAP_LABELS)}, 1),
        "binary4": (["happy", "sad", "neutral", "angry"], {"hap": 0, "sad": 1, "neu": 2, "ang": 3}, 4),
    }
    if name == "raw":
        return Protocol(name, list(label_names), list(range(len(label_names))))
    if name not in groups:
        raise ValueError(f"unknown label protocol '{name}'")
    missing = [n for n in IEMOCAP_LABELS if n not in label_names]
    if missing:
        raise ValueError(f"protocol {name} needs the IEMOCAP label names; missing {', '.join(missing)}")
    classes, mapping, heads = groups[name]
    return Protocol(name, classes, [mapping.get(n, -1) for n in label_names], heads)


@dataclass
class PaddedBatch:
    inputs: Dict[str, torch.Tensor]   # modality -> [T x B x d], zero beyond each length
    lengths: torch.Tensor             # [B] int64 (on the CPU, as pack_padded_sequence wants)
    targets: torch.Tensor             # [T x B] protocol class, -1 = context only or padding
    utterance: torch.Tensor           # [T x B] dataset utterance index, -1 = padding
    conv_index: List[int]

    def to(self, device) -> "PaddedBatch":
        return replace(self, inputs={m: x.to(device) for m, x in self.inputs.items()},
                       targets=self.targets.to(device), utterance=self.utterance.to(device))


def make_padded_batch(ds: Dataset, protocol: Protocol, convs: Sequence[int]) -> PaddedBatch:
    """Whole conversations, time-major and zero-padded, in the given order."""
    lengths = [len(ds.conversation(c)) for c in convs]
    T, B = max(lengths), len(convs)
    inputs = {m: torch.zeros(T, B, ds.features[m].shape[1]) for m in ds.modalities}
    targets = torch.full((T, B), -1, dtype=torch.long)
    utterance = torch.full((T, B), -1, dtype=torch.long)
    raw_to_class = np.asarray(protocol.raw_to_class + [-1], dtype=np.int64)  # index -1 -> -1
    for b, c in enumerate(convs):
        rows = np.asarray(ds.conversation(c))
        for m in ds.modalities:
            inputs[m][: len(rows), b] = torch.from_numpy(ds.features[m][rows])
        targets[: len(rows), b] = torch.from_numpy(raw_to_class[ds.labels[rows]])
        utterance[: len(rows), b] = torch.from_numpy(rows)
    return PaddedBatch(inputs, torch.tensor(lengths, dtype=torch.long), targets, utterance, list(convs))


def per_utterance(values: torch.Tensor, batch: PaddedBatch, num_utterances: int) -> np.ndarray:
    """Scatters [T x B x ...] values of a batch into dataset utterance order
    ([N x ...], NaN for utterances not in the batch)."""
    keep = batch.utterance >= 0
    out = np.full((num_utterances, *values.shape[2:]), np.nan, dtype=np.float64)
    out[batch.utterance[keep].cpu().numpy()] = values[keep].detach().cpu().double().numpy()
    return out


# ---------------------------------------------------------------------------------------
# Training (one step: masked loss, backward, optional clipping, Adam)
# ---------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, lr: float = 1e-3) -> torch.optim.Adam:
    """Adam over the trainable parameters, SPEC defaults (beta 0.9/0.999, eps 1e-8)."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.999),
                            eps=1e-8)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: PaddedBatch,
               clip_norm: Optional[float] = None, clip_value: Optional[float] = None):
    """One optimiser step on one batch. Returns (loss, gradient norm before clipping)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = masked_cross_entropy(model(batch.inputs, batch.lengths), batch.targets, model.heads)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, clip_value)
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
    optimizer.step()
    return float(loss), float(norm)


# ---------------------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------------------

# SPEC section 2, C = 4 (iemocap4), IEMOCAP dims.
EXPECTED_PARAMETERS = {
    "clstm_speech": 1_265_804, "clstm_visual": 1_760_204, "clstm_text": 1_265_804, "clstm_ef": 2_000_204,
    "clstm_lf": 4_729_616, "clstm_mma": 1_274_504, "mman": 5_566_384,
}


def self_check(verbose: bool = True) -> None:
    """Asserts the parameter counts of SPEC section 2 and the padding/masking invariants."""
    for t, expected in EXPECTED_PARAMETERS.items():
        n = count_parameters(build_model(ModelConfig(type=t), IEMOCAP_DIMS, 4))
        assert n == expected, f"{t}: {n} parameters, SPEC says {expected}"
        if verbose:
            print(f"{t:13s} {n:>10,d} parameters  ok")

    # Padding never leaks into the valid rows: a conversation's logits do not depend on
    # which other conversations share its batch (bidirectional included).
    torch.manual_seed(0)
    dims = {"audio": 5, "visual": 7, "text": 3}
    for cfg in (ModelConfig(type="clstm_ef", hidden=8, fc=6, bidirectional=True),
                ModelConfig(type="clstm_mma", hidden=8, fc=6, d_model=4, score="cosine", skip="concat")):
        model = build_model(cfg, dims, 4).eval()
        xs = {m: torch.randn(6, 2, d) for m, d in dims.items()}
        lengths = torch.tensor([4, 6])
        both = model(xs, lengths)
        alone = model({m: x[:4, :1] for m, x in xs.items()}, lengths[:1])
        assert torch.allclose(both[:4, 0], alone[:, 0], atol=1e-6), cfg.type

    # The cosine score clamps each norm separately (what mman's Mma mirrors): a query of
    # norm 1e-9 against a unit key scores 1e-9 / (1e-8 * 1) = 0.1, where a clamp of the
    # norm product would give 1e-9 / 1e-8 as well but 1 for two vectors of norm 1e-5.
    tiny = cosine_scores(torch.tensor([[1e-9, 0.0]]), torch.tensor([[1.0, 0.0]]))
    small = cosine_scores(torch.tensor([[1e-5, 0.0]]), torch.tensor([[1e-5, 0.0]]))
    assert torch.allclose(tiny, torch.tensor([[0.1]])) and torch.allclose(small, torch.tensor([[1.0]])), \
        "torch's cosine_similarity changed its eps handling; mman's Mma (kMmaCosineEps) mirrors torch 1.13"

    # Masked loss: padding and context-only utterances carry no loss.
    logits = torch.randn(3, 2, 8)
    targets = torch.tensor([[0, 3], [-1, 1], [2, -1]])
    ce4 = masked_cross_entropy(logits[..., :4], targets)
    keep = targets >= 0
    assert torch.allclose(ce4, F.cross_entropy(logits[..., :4][keep], targets[keep]))
    b4 = masked_cross_entropy(logits, targets, heads=4)
    by_hand = torch.stack([-torch.log_softmax(logits[t, b].view(4, 2), -1)[k, int(k == targets[t, b])]
                           for t, b in keep.nonzero().tolist() for k in range(4)]).mean()
    assert torch.allclose(b4, by_hand)
    if verbose:
        print("padding and masking invariants ok")


if __name__ == "__main__":
    self_check()
