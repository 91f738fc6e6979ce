"""Loading encoders and tokenizers, and the one place where device and precision are chosen."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PretrainedConfig

from .config import ModelArgs
from .errors import UserError

log = logging.getLogger(__name__)
DEFAULT_MAX_LENGTH = 512
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def pick_device(requested: Optional[str] = None) -> torch.device:
    """cuda when available, else cpu; `requested` (e.g. "cpu", "cuda:1") overrides. Logs the reason."""
    if requested:
        try:
            device, why = torch.device(requested), "requested"
        except RuntimeError:
            raise UserError(f"--device: '{requested}' is not a device; use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device: {requested} needs a CUDA GPU and none is available here; use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device: {requested} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
        if device.type not in ("cpu", "cuda"):
            raise UserError(f"--device: '{requested}' is not supported; use cpu, cuda or cuda:N")
    elif torch.cuda.is_available():
        device, why = torch.device("cuda"), f"CUDA GPU found ({torch.cuda.get_device_name(0)})"
    else:
        device, why = torch.device("cpu"), "no CUDA GPU"
    log.info("device: %s (%s)", device, why)
    return device


def pick_precision(requested: str = "auto") -> str:
    """fp32/bf16/fp16. auto: bf16 on a GPU that supports it (fp16 overflows in ModernBERT), else fp32."""
    cuda = torch.cuda.is_available()
    if requested == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
        log.info("precision: %s (%s)", precision, "GPU supports bf16" if precision == "bf16" else "no bf16-capable GPU; no autocast on CPU")
        return precision
    if requested in ("bf16", "fp16") and not cuda:
        raise UserError(f"train.precision: {requested} needs a CUDA GPU and none is available; use --train.precision fp32 (or auto)")
    return requested


def resolve_name(name: str) -> str:
    """A packaged model's short name (see recipes.PACKAGED_MODELS) -> its directory; anything else unchanged."""
    from .recipes import PACKAGED_MODELS

    return PACKAGED_MODELS[name]() if name in PACKAGED_MODELS else name


def _hub_error(name: str, err: Exception) -> UserError:
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
    try:
        return model_class.from_pretrained(path, use_safetensors=True, **kwargs)
    except SafetensorError as err:
        raise UserError(f"{path}: the .safetensors weights are unreadable ({err}): the file is truncated or not "
                        "safetensors; re-download the model or re-train the run") from None
    except OSError as err:
        if "safetensors" in str(err).lower() and "no file named" in str(err).lower():
            raise UserError(
                f"model.name_or_path: {path} has no .safetensors weights; encoderfit loads safetensors only "
                "(pickled .bin files can run code). Convert the weights to safetensors first"
            ) from None
        raise _hub_error(path, err) from None


def load_config(args: ModelArgs, **overrides) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(
            resolve_name(args.name_or_path), revision=args.revision, trust_remote_code=args.trust_remote_code, **overrides
        )
    except (OSError, ValueError) as err:
        raise _hub_error(args.name_or_path, err) from None


def load_tokenizer(args: ModelArgs):
    try:
        return AutoTokenizer.from_pretrained(resolve_name(args.name_or_path), revision=args.revision, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as err:
        raise _hub_error(args.name_or_path, err) from None
    except Exception as err:  # the tokenizers library raises a bare Exception for a malformed tokenizer.json
        if type(err).__module__ != "builtins" or not Path(args.name_or_path).is_dir():
            raise
        raise UserError(f"{args.name_or_path}: the tokenizer files are unreadable ({str(err)[:200]}); restore tokenizer.json") from None


def model_limit(config: PretrainedConfig, tokenizer) -> int:
    """The longest input the model accepts, in tokens."""
    limit = getattr(config, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # positions are offset by padding_idx + 1
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 1_000_000:
        limit = min(limit, tok_limit)
    return int(limit)


def resolve_max_length(args: ModelArgs, config: PretrainedConfig, tokenizer) -> int:
    limit = model_limit(config, tokenizer)
    if args.max_length is None:
        return min(DEFAULT_MAX_LENGTH, limit)
    if args.max_length > limit:
        raise UserError(f"model.max_length: {args.max_length} is above {args.name_or_path}'s limit of {limit} tokens; use at most {limit}")
    return args.max_length


def _flash_attention_ready() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def _attn_implementation(args: ModelArgs) -> Optional[str]:
    if args.attn_implementation == "flash_attention_2" and not _flash_attention_ready():
        raise UserError("model.attn_implementation: flash_attention_2 needs a CUDA GPU and the flash-attn package; use sdpa")
    if args.attn_implementation is None and _flash_attention_ready():
        return "flash_attention_2"
    return args.attn_implementation  # None lets transformers pick (sdpa where the model supports it)


def config_overrides(args: ModelArgs, config: PretrainedConfig) -> dict:
    """Config changes: attention dropout; for ModernBERT pooling, and compiled reference code only with triton and a GPU."""
    overrides = {}
    if args.attention_dropout is not None:
        for name in ATTENTION_DROPOUT_KEYS:  # each model family names it differently
            if hasattr(config, name):
                overrides[name] = args.attention_dropout
    if args.classifier_pooling is not None:
        if not hasattr(config, "classifier_pooling"):
            raise UserError(f"model.classifier_pooling applies to ModernBERT only; {args.name_or_path} is '{config.model_type}'")
        overrides["classifier_pooling"] = args.classifier_pooling
    if hasattr(config, "reference_compile"):  # older transformers compile ModernBERT by default, which fails without triton/GPU
        can_compile = torch.cuda.is_available() and importlib.util.find_spec("triton") is not None
        if config.reference_compile is not False and not can_compile:
            overrides["reference_compile"] = False
    return overrides


def load_classifier(args: ModelArgs, labels: List[str]) -> torch.nn.Module:
    """A sequence-classification model with `labels` stored as id2label/label2id (safetensors only)."""
    base = load_config(args)
    return load_weights(
        AutoModelForSequenceClassification,
        resolve_name(args.name_or_path),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        revision=args.revision,
        trust_remote_code=args.trust_remote_code,
        attn_implementation=_attn_implementation(args),
        ignore_mismatched_sizes=True,  # re-fine-tuning a model that already has a head
        **config_overrides(args, base),
    )


def load_for_inference(model_dir: str, device: Optional[str] = None) -> Tuple[torch.nn.Module, object, torch.device]:
    """A trained model directory -> (model in eval mode on its device, tokenizer, device)."""
    dev = pick_device(device)
    tokenizer = load_tokenizer(ModelArgs(name_or_path=model_dir))
    model = load_weights(AutoModelForSequenceClassification, model_dir)
    return model.to(dev).eval(), tokenizer, dev
