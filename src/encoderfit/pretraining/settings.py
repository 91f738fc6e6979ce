"""Settings of `encoderfit pretrain`, and the model they build: a ModernBERT of a named size from scratch, any
AutoConfig from scratch, or an existing encoder whose pre-training continues."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional

import yaml

from ..core.args import TrainArgs
from ..core.runconfig import CONFIG_FILE, SavedConfig, build_group, known_settings
from .corpus import CorpusArgs
from ..core.errors import UserError
from .tokenizer import TokenizerArgs

log = logging.getLogger(__name__)

# ModernBERT shapes (GLU feed-forward: intermediate_size is each half of Wi). tiny/mini/small are scaled-down
# ModernBERTs (same alternating local/global attention, pre-norm, RoPE, no biases); base is ModernBERT-base's shape.
SIZES: Dict[str, Dict[str, int]] = {
    "tiny": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 384},
    "mini": {"hidden_size": 384, "num_hidden_layers": 10, "num_attention_heads": 6, "intermediate_size": 576},
    "small": {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8, "intermediate_size": 768},
    "base": {"hidden_size": 768, "num_hidden_layers": 22, "num_attention_heads": 12, "intermediate_size": 1152},
}


@dataclass
class PretrainModelArgs:
    """The encoder to pre-train: built from scratch, or an existing one to continue."""

    size: Optional[Literal["tiny", "mini", "small", "base"]] = "tiny"
    """From scratch: a ModernBERT of this shape (with a 16k vocabulary: tiny 6.5M parameters, 2.3M of them outside
    the embeddings; mini ~19M; small ~37M; base = ModernBERT-base's shape, 149M with its 50k vocabulary). Set it to
    null to use `config` or `name_or_path`."""
    config: Optional[str] = None
    """From scratch: any AutoConfig (a hub id, a directory or a config.json) to build the model from instead of a size."""
    name_or_path: Optional[str] = None
    """Continue pre-training this encoder (hub id, local directory, or a packaged name such as all-MiniLM-L6-v2);
    size must then be null. A checkpoint without an MLM head gets a fresh one, tied to its embeddings."""
    overrides: Dict[str, Any] = field(default_factory=dict)
    """Any config field to change, e.g. {num_hidden_layers: 6, local_attention: 64}."""
    revision: Optional[str] = None
    """Model revision (branch, tag or commit) on the hub."""
    trust_remote_code: bool = False
    """Run code shipped with the model. Off by default: only enable for models you trust."""

    def __post_init__(self) -> None:
        chosen = [name for name in ("size", "config", "name_or_path") if getattr(self, name)]
        if len(chosen) != 1:
            raise UserError("model: give exactly one of model.size (from scratch), model.config (from scratch) or "
                            f"model.name_or_path (continue pre-training); got {chosen or 'none'}"
                            + ("; set --model.size null to continue a model" if "size" in chosen else ""))

    @property
    def continued(self) -> bool:
        return self.name_or_path is not None


@dataclass
class MlmArgs:
    """The masked-language-model objective."""

    block_size: int = 128
    """Tokens per training sequence: documents are packed into full blocks of this length (no padding). 128 is
    BERT's first phase; longer blocks cost quadratically more attention on CPU."""
    masking_rate: float = 0.3
    """Share of tokens masked (ModernBERT: 0.3; BERT: 0.15). Of those, 80% become [MASK], 10% a random token,
    10% stay."""
    examples: int = 6
    """Held-out sentences shown in the report with masks and the model's top predictions."""

    def __post_init__(self) -> None:
        if self.block_size < 8:
            raise UserError(f"mlm.block_size must be at least 8 (got {self.block_size})")
        if not 0 < self.masking_rate < 1:
            raise UserError(f"mlm.masking_rate must be in (0, 1) (got {self.masking_rate})")


def pretrain_defaults() -> TrainArgs:
    """Training defaults for pre-training: one pass, a larger peak learning rate than fine-tuning, ModernBERT's
    AdamW settings and warmup-stable-decay schedule."""
    return TrainArgs(epochs=1.0, batch_size=32, learning_rate=5e-4, warmup_ratio=0.06, lr_scheduler="warmup_stable_decay",
                     eval_batch_size=64, metric_for_best="loss", logging_steps=20)


@dataclass
class PretrainConfig(SavedConfig):
    """Everything a pre-training run was made with, plus what was resolved at run time."""

    corpus: CorpusArgs
    tokenizer: TokenizerArgs
    model: PretrainModelArgs
    mlm: MlmArgs
    train: TrainArgs
    task: str = "mlm"
    resolved: dict = field(default_factory=dict)
    GROUPS = {"corpus": CorpusArgs, "tokenizer": TokenizerArgs, "model": PretrainModelArgs, "mlm": MlmArgs, "train": TrainArgs}

    @classmethod
    def load(cls, run_dir: Path) -> "PretrainConfig":
        path = Path(run_dir) / CONFIG_FILE
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            raise UserError(f"{path}: missing or not valid YAML; pass --resume false to start over") from None
        groups = {name: build_group(kind, name, known_settings(kind, name, dict(raw.get(name) or {}), str(path)), str(path))
                  for name, kind in cls.GROUPS.items()}
        return cls(**groups, resolved=dict(raw.get("resolved") or {}))


# ---------------------------------------------------------------- the model


def build_model(args: PretrainModelArgs, tokenizer, block_size: int):
    """(model with a masked-LM head, how it was made: one line for the log and the report)."""
    from transformers import AutoConfig, AutoModelForMaskedLM, ModernBertConfig

    from ..models.loading import load_weights, resolve_name

    if args.continued:
        name = resolve_name(args.name_or_path)
        config = _checked_config(lambda: AutoConfig.from_pretrained(name, revision=args.revision,
                                                                    trust_remote_code=args.trust_remote_code), args.name_or_path)
        _check_positions(config, block_size, args.name_or_path)
        model, info = load_weights(AutoModelForMaskedLM, name, config=_override(config, args.overrides),
                                   revision=args.revision, trust_remote_code=args.trust_remote_code, output_loading_info=True)
        fresh = sorted(info.get("missing_keys", []))
        how = f"continued from {args.name_or_path}"
        if fresh:  # sentence-transformers checkpoints ship the encoder only
            how += (f"; its checkpoint has no MLM head: {len(fresh)} head tensors initialised the way "
                    f"{config.model_type} initialises them, the decoder tied to the input embeddings")
        return model, how
    vocab = -(-len(tokenizer) // 64) * 64  # the embedding table: a multiple of 64 rows, unused ones never predicted
    special = {"pad_token_id": tokenizer.pad_token_id, "cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
               "bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id}
    if args.size:
        # sparse_prediction: the MLM head's vocabulary projection runs on the masked tokens only (30%), not on all
        # classifier_pooling mean, as in ModernBERT's released configs: MLM never trains the [CLS] output, so a model
        # fine-tuned from this one pools the mean of its tokens
        config = ModernBertConfig(vocab_size=vocab, max_position_embeddings=max(512, block_size), sparse_prediction=True,
                                  classifier_pooling="mean", **SIZES[args.size], **special)
        how = f"ModernBERT {args.size} from scratch"
    else:
        config = _checked_config(lambda: AutoConfig.from_pretrained(resolve_name(args.config), revision=args.revision,
                                                                    trust_remote_code=args.trust_remote_code), args.config)
        config.vocab_size = vocab
        for key, value in special.items():
            setattr(config, key, value)
        how = f"{config.model_type} from scratch (config of {args.config})"
    config = _override(config, args.overrides)
    _check_positions(config, block_size, args.size or args.config)
    try:
        model = AutoModelForMaskedLM.from_config(config, trust_remote_code=args.trust_remote_code)
    except ValueError:
        raise UserError(_not_encoder(config, args.config)) from None
    return model, how


def _checked_config(load, name: str):
    from transformers import AutoModelForMaskedLM

    from ..models.loading import hub_error

    try:
        config = load()
    except (OSError, ValueError) as err:
        raise hub_error(name, err) from None
    if type(config) not in AutoModelForMaskedLM._model_mapping or getattr(config, "is_decoder", False):
        raise UserError(_not_encoder(config, name))
    return config


def _not_encoder(config, name) -> str:
    return (f"model: {name} is a '{config.model_type}' model, which has no masked-language-model form in transformers; "
            "pre-train an encoder (ModernBERT, BERT, RoBERTa, DeBERTa, ...)")


def _check_positions(config, block_size: int, name) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") and limit:
        limit -= 2  # positions are offset by padding_idx + 1
    if limit and block_size > limit:
        raise UserError(f"mlm.block_size {block_size} is above {name}'s {limit} positions; use --mlm.block_size {limit} or less")


def _override(config, overrides: Dict[str, Any]):
    """The config rebuilt with `overrides`, so fields derived from others (ModernBERT's layer_types from the layer
    count) are derived again."""
    if not overrides:
        return config
    values = config.to_dict()
    for key in overrides:
        if key not in values and not hasattr(config, key):
            raise UserError(f"model.overrides: {config.model_type} configs have no field '{key}'")
    if "num_hidden_layers" in overrides and "layer_types" not in overrides:
        values.pop("layer_types", None)
    return type(config).from_dict({**values, **overrides})
