"""Loading encoders and tokenizers: safetensors only, remote code only when asked, one-line errors.

The output layer (and its config: num_labels, id2label, problem_type) comes from the run's task.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional, Tuple

from ..core.args import ModelArgs
from ..core.device import can_compile, flash_attention_ready, pick_device
from ..core.errors import UserError

log = logging.getLogger(__name__)
DEFAULT_MAX_LENGTH = 512  # tokens, when neither the run nor the model says
SENTENCE_MODULES = "modules.json"  # what makes a directory a sentence-transformers model


def is_sentence_model(path) -> bool:
    """Whether a local directory is a sentence-transformers model (Transformer, Pooling, ... modules)."""
    return (Path(path) / SENTENCE_MODULES).is_file()


def transformer_path(path: str) -> str:
    """Where a model's transformer (config.json, weights, tokenizer) is: a local sentence-transformers directory's
    Transformer module folder as its modules.json names it (encoderfit keeps a classifier's in 0_Transformer/, so that
    no top-level config.json lets a plain pipeline load it with a random head), else `path` itself (a hub id too)."""
    import json

    modules = Path(path) / SENTENCE_MODULES
    if not modules.is_file():
        return path
    try:
        entries = json.loads(modules.read_text(encoding="utf-8"))
        folder = next((m.get("path") or "" for m in entries if str(m.get("type", "")).endswith("Transformer")), "")
    except (ValueError, AttributeError, TypeError):
        return path  # unreadable: the loaders report the directory as it is
    return str(Path(path) / folder) if folder else path
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def resolve_name(name: str) -> str:
    """A packaged model's short name (see recipes.PACKAGED_MODELS) -> its directory; anything else unchanged."""
    from ..data.recipes import PACKAGED_MODELS

    return PACKAGED_MODELS[name]() if name in PACKAGED_MODELS else name


def hub_error(name: str, err: Exception) -> UserError:
    reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    if Path(name).expanduser().is_dir():  # a local directory that is there but broken: say what is wrong with it
        return UserError(f"model.name_or_path: {name} cannot be loaded: {reason}; restore the directory's files "
                         "(config.json, tokenizer, .safetensors weights) or re-train/re-download it")
    offline = "HF_HUB_OFFLINE is set" if os.environ.get("HF_HUB_OFFLINE") else "the hub may be unreachable"
    return UserError(
        f"model.name_or_path: cannot load '{name}': it is not a local model directory and it could not be fetched "
        f"from the Hugging Face hub ({offline}: {reason}). Download it where the hub is reachable "
        "(`hf download NAME --local-dir DIR`) and pass --model.name_or_path DIR"
    )


def load_weights(model_class, path: str, **kwargs):
    """`model_class.from_pretrained(path, safetensors only)`, with a broken local file reported as one line."""
    from safetensors import SafetensorError

    try:
        return model_class.from_pretrained(transformer_path(path), use_safetensors=True, **kwargs)
    except SafetensorError as err:
        raise UserError(f"{path}: the .safetensors weights are unreadable ({err}): the file is truncated or not "
                        "safetensors; re-download the model or re-train the run") from None
    except OSError as err:
        if "safetensors" in str(err).lower() and "no file named" in str(err).lower():
            raise UserError(
                f"model.name_or_path: {path} has no .safetensors weights; encoderfit loads safetensors only "
                "(pickled .bin files can run code). Convert the weights to safetensors first"
            ) from None
        raise hub_error(path, err) from None


def load_config(args: ModelArgs, **overrides):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            transformer_path(resolve_name(args.name_or_path)), revision=args.revision, trust_remote_code=args.trust_remote_code, **overrides
        )
    except (OSError, ValueError) as err:
        raise hub_error(args.name_or_path, err) from None


def load_tokenizer(args: ModelArgs):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(transformer_path(resolve_name(args.name_or_path)), revision=args.revision,
                                             trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as err:
        raise hub_error(args.name_or_path, err) from None
    except Exception as err:  # the tokenizers library raises a bare Exception for a malformed tokenizer.json
        if type(err).__module__ != "builtins" or not Path(args.name_or_path).is_dir():
            raise
        raise UserError(f"{args.name_or_path}: the tokenizer files are unreadable ({str(err)[:200]}); restore tokenizer.json") from None


def model_limit(config, tokenizer) -> int:
    """The longest input the model accepts, in tokens."""
    limit = getattr(config, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # positions are offset by padding_idx + 1
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 1_000_000:
        limit = min(limit, tok_limit)
    return int(limit)


def resolve_max_length(args: ModelArgs, config, tokenizer) -> int:
    limit = model_limit(config, tokenizer)
    if args.max_length is None:
        return min(DEFAULT_MAX_LENGTH, limit)
    if args.max_length > limit:
        raise UserError(f"model.max_length: {args.max_length} is above {args.name_or_path}'s limit of {limit} tokens; use at most {limit}")
    return args.max_length


def _attn_implementation(args: ModelArgs) -> Optional[str]:
    if args.attn_implementation == "flash_attention_2" and not flash_attention_ready():
        raise UserError("model.attn_implementation: flash_attention_2 needs a CUDA GPU and the flash-attn package; use sdpa")
    if args.attn_implementation is None and flash_attention_ready():
        return "flash_attention_2"
    return args.attn_implementation  # None lets transformers pick (sdpa where the model supports it)


def config_overrides(args: ModelArgs, config) -> dict:
    """Config changes: attention dropout; for ModernBERT pooling, and compiled reference code only with triton and a GPU."""
    overrides = {}
    if args.attention_dropout is not None:
        for name in ATTENTION_DROPOUT_KEYS:  # each model family names it differently
            if hasattr(config, name):
                overrides[name] = args.attention_dropout
    if args.classifier_pooling is not None and hasattr(config, "classifier_pooling"):  # ModernBERT; others: pooling.py
        overrides["classifier_pooling"] = args.classifier_pooling
    if hasattr(config, "reference_compile"):  # older transformers compile ModernBERT by default, which fails without triton/GPU
        if config.reference_compile is not False and not can_compile():
            overrides["reference_compile"] = False
    return overrides


def auto_model(task):
    import transformers

    return getattr(transformers, task.auto_model)


def load_model(args: ModelArgs, task, labels: List[str], bias=None):
    """The encoder with the task's output layer, labels stored as id2label/label2id (safetensors only). `bias`: the
    output layer's starting bias when the layer is new (the task's prior log-odds), None: the architecture's zeros.
    The model's `head_is_new` says whether its output layer was initialised here (False: a checkpoint's head for the
    same labels, kept)."""
    base = load_config(args)
    head = task.modeling.model_kwargs(labels)
    model, loading = load_weights(
        auto_model(task),
        resolve_name(args.name_or_path),
        **head,
        revision=args.revision,
        trust_remote_code=args.trust_remote_code,
        attn_implementation=_attn_implementation(args),
        ignore_mismatched_sizes=True,  # re-fine-tuning a model that already has a head: a head of another size is new
        **config_overrides(args, base),
        output_loading_info=True,
    )
    new_keys = set(loading.get("missing_keys") or []) | {m[0] if isinstance(m, (tuple, list)) else m for m in loading.get("mismatched_keys") or []}
    fresh = any(name.startswith(f"{layer}.") for name in new_keys for layer in _output_layer_names(model, head.get("num_labels", 0)))
    old = head_labels(base) if type(model).__name__ in (base.architectures or []) else None
    new = [head["id2label"][i] for i in sorted(head["id2label"])] if "id2label" in head else None
    if old is not None and new is not None and old != new:  # same size, other meaning: its rows must not carry over
        log.info("%s's %s head predicts %s; the new labels differ, so the head is initialised afresh",
                 args.name_or_path, type(model).__name__, old if len(old) <= 8 else f"{len(old)} other labels")
        reinitialise_head(model)
        fresh = True
    if fresh and bias is not None:
        set_output_bias(model, bias)
    model.head_is_new = fresh  # a head trained for these labels already is kept as loaded (and not probed again)
    return model


def output_layer(model, outputs: int):
    """The task head's final linear layer: the last one outside the encoder with one row per output."""
    import torch

    encoder = getattr(model, model.base_model_prefix)
    inside = {id(m) for m in encoder.modules()}
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and id(m) not in inside and m.out_features == outputs]
    return layers[-1] if layers else None


def _output_layer_names(model, outputs: int) -> List[str]:
    layer = output_layer(model, outputs)
    return [name for name, module in model.named_modules() if module is layer]


def set_output_bias(model, bias) -> None:
    """Start the output layer's bias at `bias` (one value per output), so the first steps need not learn the priors:
    with Adam a bias moves about one learning rate a step, far too slowly to reach a rare label's log-odds."""
    import torch

    layer = output_layer(model, len(bias))
    if layer is None or layer.bias is None:
        log.info("no output layer with a bias of %d outputs found: the output bias keeps its initialisation", len(bias))
        return
    with torch.no_grad():
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))


def head_labels(config) -> List[str]:
    """The output names a checkpoint's head was trained for, in output order."""
    mapping = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    return [mapping[i] for i in sorted(mapping)]


def reinitialise_head(model) -> None:
    """Every parameter outside the encoder (the task head) back to the architecture's own initialisation.

    transformers' init functions skip tensors flagged `_is_hf_initialized` (set on everything loaded from the
    checkpoint): the head's flags are cleared, the encoder's set, and the model's own `_init_weights` runs on the head
    modules and on the model itself (some architectures, ModernBERT among them, initialise the classifier there)."""
    encoder = getattr(model, model.base_model_prefix)
    kept = {id(p) for p in encoder.parameters()}
    for param in model.parameters():
        param._is_hf_initialized = id(param) in kept
    for name, module in model.named_children():
        if module is not encoder:
            module.apply(model._init_weights)
    model._init_weights(model)
    for param in model.parameters():
        param._is_hf_initialized = True


def ensemble_module(members: list):
    """One module whose logits are the mean of its members' (an ensemble that predict, serve and ONNX export run as
    one model)."""
    from types import SimpleNamespace

    import torch

    class Ensemble(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.members = torch.nn.ModuleList(members)
            self.config = members[0].config

        def forward(self, **inputs):
            return SimpleNamespace(logits=torch.stack([m(**inputs).logits for m in self.members]).mean(0))

    return Ensemble()


def load_trained(model_dir: str, task, members: List[str], **kwargs):
    """A trained model directory's model: its weights, or the ensemble of its members' when it has members."""
    def load(path: Path):
        import transformers

        sentence = is_sentence_model(path)  # a sentence-transformers directory: the bare transformer, pooled
        return task.modeling.inference_model(load_weights(transformers.AutoModel if sentence else auto_model(task), str(path), **kwargs), path)

    if not members:
        return load(Path(model_dir))
    return ensemble_module([load(Path(model_dir) / m) for m in members])


def load_for_inference(model_dir: str, task, members: List[str], device: Optional[str] = None, **kwargs) -> Tuple[object, object, object]:
    """A trained model directory -> (model in eval mode on its device, tokenizer, device)."""
    dev = pick_device(device)
    tokenizer = load_tokenizer(ModelArgs(name_or_path=model_dir))
    model = load_trained(model_dir, task, members, **kwargs)
    return model.to(dev).eval(), tokenizer, dev
