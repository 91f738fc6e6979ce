"""Padding-free encoders: the real tokens of a batch packed back to back, attention confined to each sequence.

Batches stay padded where they are cheap (the collators' integer tensors, [B, L]). Inside the model, the bare encoder
(the task model's `base_model`, a sentence-transformers model's transformer) gathers the real tokens into one row
[1, T] with positions restarting at 0 for each sequence (RoPE for ModernBERT, absolute positions for BERT, offset
ones for RoBERTa; token types packed along), runs every layer on those T tokens only, and scatters the hidden states
back to [B, L, H] (zeros at the pads) so every head reads its own sequence as before: [CLS], mean pooling with the
mask, token and span heads, BERT's pooler (recomputed on the scattered states).

Attention sees the sequence boundaries through transformers' standard varlen keyword arguments (`cu_seq_lens_q/k`,
`max_length_q/k`) and the attention function registered here under `PACKED` (transformers' `AttentionInterface`):
- on CUDA, in bf16/fp16 and without attention dropout: `torch.nn.attention.varlen.varlen_attn` (FlashAttention's
  varlen kernel; ModernBERT's sliding window as its `window_size`, where this torch has the argument);
- otherwise (the CPU, fp32, attention dropout, and as the reference): the packed q/k/v re-padded per sequence inside
  attention and `scaled_dot_product_attention` with a key-padding mask (and the sliding-window band): exact, and the
  linear layers, which hold most of the arithmetic, still see real tokens only.
No T x T mask is ever built: transformers builds no mask for an implementation its mask interface does not know.

The name lives only in memory (`config._attn_implementation` is not written to config.json), so a saved model
directory is a plain transformers model. Families whose attention does not go through `AttentionInterface` (MPNet,
DeBERTa) keep padded batches, with the reason logged.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Dict, List, Optional, Tuple, Union

log = logging.getLogger(__name__)

PACKED = "encoderfit_packed"
"""The attention implementation registered with transformers (in memory only; never saved)."""
FAMILIES: Dict[str, str] = {"modernbert": "rope", "bert": "absolute", "distilbert": "absolute", "electra": "absolute",
                            "roberta": "offset", "xlm-roberta": "offset", "camembert": "offset"}
"""model_type -> how its positions are given: rope and absolute from 0 per sequence; offset: from pad_token_id + 1."""
WHY_NOT: Dict[str, str] = {
    "mpnet": "MPNet adds a relative position bias, computed from the padded batch, inside its own attention module, "
             "which does not go through transformers' AttentionInterface",
    "deberta-v2": "DeBERTa's disentangled relative attention is computed inside its own attention module, not through "
                  "transformers' AttentionInterface",
    "deberta": "DeBERTa's disentangled relative attention is computed inside its own attention module, not through "
               "transformers' AttentionInterface",
}
Setting = Union[bool, str]
_logged: set = set()


def _log_once(message: str, *args) -> None:
    text = message % args
    if text not in _logged:
        _logged.add(text)
        log.info(text)


# ---- the attention function


@functools.lru_cache(maxsize=None)
def varlen_kernel():
    """(torch's varlen_attn, its keyword parameters), or None where this torch lacks it (before 2.10). torch 2.10's
    takes neither `scale` nor `window_size`; 2.11 and later take both."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


def kernel_for(query, dropout: float, window: Optional[int], scaling: Optional[float] = None) -> str:
    """Which path packed attention takes for these inputs: "varlen" (CUDA FlashAttention) or "repad" (SDPA)."""
    import torch

    found = varlen_kernel() if query.is_cuda else None
    if found is None or query.dtype not in (torch.float16, torch.bfloat16) or dropout > 0 or query.shape[-1] > 256:
        return "repad"
    if window is not None and "window_size" not in found[1]:
        return "repad"
    if "scale" not in found[1] and scaling is not None and abs(scaling - query.shape[-1] ** -0.5) > 1e-6:
        return "repad"
    return "varlen"


def packed_attention(module, query, key, value, attention_mask=None, dropout: float = 0.0, scaling: Optional[float] = None,
                     sliding_window: Optional[int] = None, cu_seq_lens_q=None, cu_seq_lens_k=None,
                     max_length_q: Optional[int] = None, max_length_k: Optional[int] = None, **kwargs):
    """transformers' attention-function contract for a packed row: query/key/value [1, heads, T, head_dim] ->
    ([1, T, heads, head_dim], None). `sliding_window` follows transformers' flash convention (ModernBERT passes its
    half-window + 1): each token sees the tokens of its sequence at distance <= sliding_window - 1."""
    if cu_seq_lens_q is None or max_length_q is None:
        raise RuntimeError(f"{PACKED} attention was called without cu_seq_lens_q: the encoder was not called through "
                           "encoderfit's packing (models/packing.py); train or load it with packing false")
    if getattr(module, "is_causal", False):
        raise RuntimeError(f"{PACKED} attention is bidirectional; {type(module).__name__} is causal")
    window = sliding_window - 1 if sliding_window else None
    if kernel_for(query, dropout, window, scaling) == "varlen":
        varlen_attn, accepts = varlen_kernel()
        extra = {"window_size": (window, window)} if window is not None else {}
        if "scale" in accepts:
            extra["scale"] = scaling
        out = varlen_attn(query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1), cu_seq_lens_q,
                          cu_seq_lens_q if cu_seq_lens_k is None else cu_seq_lens_k, max_length_q, max_length_k or max_length_q,
                          **extra)
        return out.unsqueeze(0), None
    return repadded_attention(query, key, value, cu_seq_lens_q, max_length_q, dropout, scaling, window), None


def repadded_attention(query, key, value, cu_seqlens, max_length: int, dropout: float = 0.0, scaling=None,
                       window: Optional[int] = None):
    """The reference: packed [1, H, T, D] re-padded to [N, H, L, D] per sequence, SDPA with a key-padding mask (and
    |i - j| <= window), back to packed [1, T, H, D]."""
    import torch
    import torch.nn.functional as F

    heads, total, dim = query.shape[1], query.shape[2], query.shape[3]
    n, longest, device = cu_seqlens.numel() - 1, max(int(max_length), 1), query.device
    lengths = cu_seqlens.diff()
    seq = torch.repeat_interleave(torch.arange(n, device=device), lengths, output_size=total)
    flat = seq * longest + torch.arange(total, device=device) - cu_seqlens[seq]  # each token's row in [N * L]

    def pad(x):
        rows = x[0].transpose(0, 1)  # [T, H, D]
        return rows.new_zeros(n * longest, heads, dim).index_copy(0, flat, rows).view(n, longest, heads, dim).transpose(1, 2)

    columns = torch.arange(longest, device=device)
    mask = (columns[None, :] < lengths.clamp(min=1)[:, None])[:, None, None, :]  # [N, 1, 1, L]; an empty row sees a zero key
    if window is not None and longest > window + 1:
        mask = mask & ((columns[:, None] - columns[None, :]).abs() <= window)[None, None]
    out = F.scaled_dot_product_attention(pad(query), pad(key), pad(value), attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).reshape(n * longest, heads, dim).index_select(0, flat).unsqueeze(0)


def register() -> None:
    """Register `packed_attention` with transformers under PACKED (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED, packed_attention)


# ---- packing and unpacking around the encoder


PACKED_BUCKETS = 16
"""Packed lengths per doubling on a CPU (`packed_length`)."""


def packed_length(total: int) -> int:
    """The length a CPU batch's packed row is filled up to: `total` rounded up to one of PACKED_BUCKETS steps per
    doubling (at most 6.25% filler, ~3% on average). On a CPU every new tensor shape leaves memory behind that a long
    run never gets back (core/device.py `pad_multiple`); the packed row's length would otherwise change every batch."""
    step = max(8, (1 << (max(total, 1).bit_length() - 1)) // PACKED_BUCKETS)
    return -(-total // step) * step


def torch_cat(tensors):
    import torch

    return torch.cat(tensors)


class Packer:
    """One batch's packing: the real tokens of a padded [B, L] batch gathered into [1, T] and scattered back; on a
    CPU, T is filled up to `packed_length` with filler sequences that attend only to themselves."""

    def __init__(self, attention_mask, offset: int = 0):
        import torch

        self.shape = tuple(attention_mask.shape)
        mask = attention_mask.bool()
        self.index = mask.flatten().nonzero().squeeze(1)  # the real tokens' places in [B * L]
        lengths = mask.sum(1, dtype=torch.int32)
        self.cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        self.max_length = self.shape[1]  # the batch's padded width: at least the longest text, known without a device sync
        self.position_ids = ((mask.cumsum(1) - 1).flatten()[self.index] + offset).unsqueeze(0)
        self.total = self.extra = 0
        if attention_mask.device.type == "cpu":  # a few packed lengths, not one per batch (see `packed_length`)
            self.total = int(self.index.numel())
            self.extra = packed_length(self.total) - self.total
        if self.extra:  # filler tokens in sequences of their own (at most the batch's width each): computed, never read
            width = max(self.shape[1], 1)
            ends = torch.tensor([*range(width, self.extra, width), self.extra], dtype=torch.int32) + self.total
            self.cu_seqlens = torch.cat([self.cu_seqlens, ends])
            self.position_ids = torch.cat([self.position_ids, self.position_ids.new_full((1, self.extra), offset)], 1)

    def gather(self, x):
        """[B, L, ...] -> [1, T, ...] (a [1, L] tensor is broadcast over the rows first)."""
        x = x.expand(self.shape[0], *x.shape[1:]) if x.shape[0] != self.shape[0] else x
        rows = x.reshape(self.shape[0] * self.shape[1], *x.shape[2:]).index_select(0, self.index)
        if self.extra:
            rows = torch_cat([rows, rows.new_zeros(self.extra, *rows.shape[1:])])
        return rows.unsqueeze(0)

    def scatter(self, x):
        """[1, T, ...] -> [B, L, ...], zeros at the pads (filler tokens dropped)."""
        rows = x[0, : self.total] if self.extra else x[0]
        return rows.new_zeros(self.shape[0] * self.shape[1], *rows.shape[1:]).index_copy(0, self.index, rows).view(*self.shape, *rows.shape[1:])

    def attention_kwargs(self) -> dict:
        return {"cu_seq_lens_q": self.cu_seqlens, "cu_seq_lens_k": self.cu_seqlens,
                "max_length_q": self.max_length, "max_length_k": self.max_length}


class PackedEncoder:
    """Mixed into a bare encoder's class (in memory: `enable_packing`): its forward runs on the packed real tokens."""

    _unpacked_class = None
    _positional: Tuple[str, ...] = ()
    _position_offset = 0

    def forward(self, *args, **kwargs):
        import torch

        inputs = dict(zip(self._positional, args), **kwargs)
        if inputs.get("output_attentions"):
            raise ValueError("attention weights are not computed with packing (train.packing): load the model with packing false")
        ids, embeds = inputs.get("input_ids"), inputs.get("inputs_embeds")
        source = ids if ids is not None else embeds
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones(source.shape[:2], dtype=torch.bool, device=source.device)
        packer = Packer(mask, self._position_offset)
        for name in ("input_ids", "inputs_embeds", "token_type_ids", "position_ids"):
            if inputs.get(name) is not None:
                inputs[name] = packer.gather(inputs[name])
        if inputs.get("position_ids") is None:
            inputs["position_ids"] = packer.position_ids
        inputs["attention_mask"] = None  # transformers builds no mask for PACKED: the sequences are in the kwargs
        as_tuple = inputs.pop("return_dict", True) is False
        out = super().forward(**inputs, **packer.attention_kwargs())
        total = packer.index.numel() + packer.extra
        for name, value in list(out.items()):
            if torch.is_tensor(value) and value.dim() >= 2 and value.shape[:2] == (1, total):
                out[name] = packer.scatter(value)
            elif isinstance(value, tuple) and value and all(torch.is_tensor(v) and v.shape[:2] == (1, total) for v in value):
                out[name] = tuple(packer.scatter(v) for v in value)
        if getattr(self, "pooler", None) is not None and "pooler_output" in out:  # BERT's pooler reads each row's [CLS]
            out["pooler_output"] = self.pooler(out["last_hidden_state"])
        return out.to_tuple() if as_tuple else out


_CLASSES: Dict[type, type] = {}


def _packed_class(cls: type) -> type:
    if cls not in _CLASSES:
        params = [p.name for p in list(inspect.signature(cls.forward).parameters.values())[1:]
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        _CLASSES[cls] = type(cls.__name__, (PackedEncoder, cls), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__, "_unpacked_class": cls,
            "_positional": tuple(params)})
    return _CLASSES[cls]


def encoders(model) -> List:
    """The bare transformers encoders inside a model (a task model's base_model, a sentence-transformers model's
    transformer, each member of an ensemble)."""
    from transformers import PreTrainedModel

    return [m for m in model.modules() if isinstance(m, PreTrainedModel) and m.base_model is m]


def unsupported(encoder) -> Optional[str]:
    """Why this encoder cannot be packed (None: it can)."""
    config = encoder.config
    kind = getattr(config, "model_type", "")
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return f"{type(encoder).__name__} is configured as a decoder"
    if kind in WHY_NOT:
        return WHY_NOT[kind]
    if not type(encoder)._can_set_attn_implementation() or not getattr(encoder, "_supports_attention_backend", False):
        return (f"{type(encoder).__name__}'s attention does not go through transformers' AttentionInterface with the "
                "varlen keyword arguments")
    if kind not in FAMILIES:
        return f"packing is verified for {sorted(FAMILIES)}, not for {kind or type(encoder).__name__}"
    return None


def enable_packing(model, setting: Setting = "auto", explicit_attention: Optional[str] = None) -> bool:
    """Pack the batches of every encoder inside `model` (in place) where its family allows it; the path taken is
    logged once. setting: "auto" (on where supported), True (on where supported, a warning elsewhere) or False.
    `explicit_attention`: an attention implementation the user asked for, which auto leaves in place. True when
    every encoder packs."""
    found = encoders(model)
    if setting is False or setting == "false" or not found:
        return False
    if explicit_attention and setting == "auto":
        _log_once("padding-free: off (model.attn_implementation %s was asked for; train.packing true packs anyway)", explicit_attention)
        return False
    reasons = {type(e).__name__: unsupported(e) for e in found}
    refused = {name: why for name, why in reasons.items() if why}
    if refused:
        say = log.warning if setting is True or setting == "true" else _log_once
        for name, why in refused.items():
            say("padding-free: off, padded batches (%s): %s", name, why)
        return False
    register()
    for encoder in found:
        if isinstance(encoder, PackedEncoder):
            continue
        previous = encoder.config._attn_implementation
        encoder.__class__ = _packed_class(type(encoder))
        encoder._unpacked_attention = previous
        encoder._position_offset = (encoder.config.pad_token_id + 1) if FAMILIES[encoder.config.model_type] == "offset" else 0
        encoder.config._attn_implementation_internal = PACKED  # in memory only: config.json never holds it
    _log_once("padding-free: on (%s): real tokens only, attention per sequence by %s", ", ".join(sorted(reasons)),
              attention_path(found[0]))
    return True


def disable_packing(model) -> None:
    """Undo enable_packing: each encoder back to its own class and attention implementation."""
    for encoder in encoders(model):
        if isinstance(encoder, PackedEncoder):
            encoder.config._attn_implementation_internal = encoder._unpacked_attention
            encoder.__class__ = encoder._unpacked_class
            del encoder._unpacked_attention


def is_packed(model) -> bool:
    return any(isinstance(e, PackedEncoder) for e in encoders(model))


def attention_path(encoder) -> str:
    """In words, which attention kernel packed batches take on this encoder's device."""
    import torch

    device = next(encoder.parameters()).device
    if device.type == "cpu" and torch.cuda.is_available():  # the Trainer moves it to the GPU
        device = torch.device("cuda")
    found = varlen_kernel()
    if device.type != "cuda":
        return f"re-padded SDPA on {device.type}"
    if found is None:
        return f"re-padded SDPA (torch {torch.__version__} has no torch.nn.attention.varlen)"
    window = "" if "window_size" in found[1] else "; sliding-window layers: re-padded SDPA (this varlen_attn has no window_size)"
    return f"varlen_attn (FlashAttention) in bf16/fp16, re-padded SDPA in fp32 or with attention dropout{window}"


def batch_tokens(attention_mask, packed: bool) -> Dict[str, int]:
    """A batch's real tokens and the tokens the encoder computes (all B x L positions padded, the real ones packed):
    {"real", "computed", "padding_share"}."""
    real = int(attention_mask.sum())
    computed = real if packed else int(attention_mask.numel())
    return {"real": real, "computed": computed, "padding_share": 1 - real / computed if computed else 0.0}
