"""A linear head on the pooled sentence vector, for encoders that were trained to produce one.

A sentence-transformers checkpoint (all-MiniLM-L6-v2, all-mpnet-base-v2, ...) was trained on the mean of its token
vectors (its `1_Pooling/config.json` says so). transformers' sequence-classification heads for these families read
the [CLS] token through BERT's pooler (dense + tanh), a layer sentence-transformers training never used: in the
packaged MiniLM its biases are all zero and its weights' std 0.009, against 0.04-0.08 in the trained layers. So
for such a checkpoint (and for any non-ModernBERT encoder given `--model.classifier_pooling`), encoderfit fine-tunes
`PooledClassifier`: the bare encoder, the checkpoint's own pooling, one linear layer.

The trained model is saved as a sentence-transformers directory (Transformer in 0_Transformer/, Pooling, Dense with the
identity activation): `SentenceTransformer(DIR).encode(texts)` returns the logits, encoderfit's inference (`pooled`)
runs the same modules for predict, serve and ONNX export, and `transformers.pipeline(DIR)` fails (no top-level
config.json) rather than load the encoder under a random head. ModernBERT keeps its own head, whose config has the
pooling option (`classifier_pooling`), so its directories load in `transformers.pipeline`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional

import torch

from ..core.errors import UserError
from .loading import SENTENCE_MODULES, is_sentence_model

log = logging.getLogger(__name__)
DENSE = "2_Dense"


def checkpoint_pooling(name_or_path: str, revision: Optional[str] = None) -> Optional[str]:
    """cls, mean or max when `name_or_path` is a sentence-transformers checkpoint (local or on the hub), else None."""
    path = Path(name_or_path)
    if path.is_dir():
        return pooling_of(path)["mode"] if is_sentence_model(path) else None
    try:  # a hub id: its modules.json and pooling config, from the cache when offline
        from huggingface_hub import hf_hub_download

        offline = bool(os.environ.get("HF_HUB_OFFLINE"))
        modules = json.loads(Path(hf_hub_download(name_or_path, SENTENCE_MODULES, revision=revision, local_files_only=offline)).read_text())
        pooling = next((m for m in modules if m["type"].endswith("Pooling")), None)
        if pooling is None:
            return None
        config = json.loads(Path(hf_hub_download(name_or_path, f"{pooling['path']}/config.json", revision=revision,
                                                 local_files_only=offline)).read_text())
    except Exception as err:  # noqa: BLE001  (not a sentence-transformers repo, or unreachable: the loader reports the latter)
        log.debug("%s: no sentence-transformers pooling found (%s)", name_or_path, err)
        return None
    return pooling_mode(config)


def pool(hidden, attention_mask, mode: str):
    """The sentence vector of each row: its [CLS] token, or the mean / max of its real (unpadded) tokens."""
    import torch

    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def pooled_classifier(args, task, labels: List[str], bias=None):
    """The model to fine-tune when the head must read a pooled vector (see the module's docstring), else None."""
    from .loading import config_overrides, load_config, load_weights, resolve_name

    base = load_config(args)
    if hasattr(base, "classifier_pooling"):  # ModernBERT: its own head pools as asked (config_overrides)
        return None
    if task.auto_model != "AutoModelForSequenceClassification":
        if args.classifier_pooling:
            raise UserError(f"model.classifier_pooling: the {task.name} task labels every token and pools nothing; drop it")
        return None
    path = resolve_name(args.name_or_path)
    mode = args.classifier_pooling or checkpoint_pooling(path, args.revision)
    if mode is None:
        return None
    from transformers import AutoModel

    overrides = {k: v for k, v in config_overrides(args, base).items() if k != "classifier_pooling"}
    encoder = load_weights(AutoModel, path, revision=args.revision, trust_remote_code=args.trust_remote_code, **overrides)
    outputs = task.targets.num_outputs(labels)
    log.info("head: a linear layer on the %s-pooled sentence vector (%s), not the architecture's [CLS] pooler; the model is "
             "saved as a sentence-transformers directory", mode,
             "--model.classifier_pooling" if args.classifier_pooling else "the checkpoint's own pooling")
    model = PooledClassifier.build(encoder, mode, outputs, bias)
    trained = checkpoint_head(path, labels, outputs)
    if trained is not None:  # a pooled classifier of these labels (a pruned run's model, `encoderfit compress`)
        model.head.load_state_dict(trained.state_dict())
        log.info("head: %s's own linear head, trained for these labels, is kept", args.name_or_path)
    model.head_is_new = trained is None
    return model


def checkpoint_head(model_dir, labels: List[str], outputs: int):
    """A sentence-transformers classifier directory's own linear head (its Dense module, not a projection) when its
    encoderfit.json says it was trained for these labels; else None."""
    model_dir = Path(model_dir)
    info = model_dir / "encoderfit.json"  # runs/rundir.py's ModelDir.INFO
    if not is_sentence_model(model_dir) or not info.is_file():
        return None
    if list(json.loads(info.read_text(encoding="utf-8")).get("labels") or []) != list(labels):
        return None
    setting = pooling_of(model_dir)
    if not setting.get("dense") or setting.get("projects"):
        return None
    layer = _dense_layer(model_dir, setting["dense"])
    return layer if layer.out_features == outputs else None


class PooledClassifier(torch.nn.Module):
    """encoder -> pooling -> linear: the logits of classification, multi-label and regression."""

    _keys_to_ignore_on_save = None  # the Trainer asks this of any model it resumes
    base_model_prefix = "encoder"  # as transformers models name theirs: what is not in it is the task head

    def __init__(self, encoder, mode: str, outputs: int):
        super().__init__()
        self.encoder, self.mode = encoder, mode
        self.head = torch.nn.Linear(encoder.config.hidden_size, outputs)
        self.config = encoder.config

    @classmethod
    def build(cls, encoder, mode: str, outputs: int, bias=None) -> "PooledClassifier":
        model = cls(encoder, mode, outputs)
        torch.nn.init.normal_(model.head.weight, std=getattr(encoder.config, "initializer_range", 0.02))
        torch.nn.init.zeros_(model.head.bias)
        if bias is not None:
            with torch.no_grad():
                model.head.bias.copy_(torch.as_tensor(bias, dtype=model.head.bias.dtype))
        return model

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return SequenceClassifierOutput(logits=self.head(pool(hidden, attention_mask, self.mode)))


def save_sentence_classifier(model_dir: Path, model: PooledClassifier, max_length: int) -> None:
    """Turn the Trainer's save of a PooledClassifier (model.safetensors with encoder.* and head.*, after the task's
    adjustment of it; the tokenizer beside it) into a sentence-transformers directory: Transformer (the encoder, in
    0_Transformer/), Pooling, Dense. No transformers class holds this model (their heads read a dense + tanh or ReLU
    pooler first), so the top level has no config.json: `pipeline(DIR)` fails there instead of loading the encoder
    under a random head, and `SentenceTransformer(DIR).encode(texts)` gives the logits."""
    from safetensors.torch import load_file
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    model.encoder.load_state_dict({k[len("encoder."):]: v for k, v in weights.items() if k.startswith("encoder.")})
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))  # the Trainer saved it beside the weights
    (model_dir / "model.safetensors").unlink()  # split below into the modules' own files

    def write(folder: Path) -> None:
        model.encoder.save_pretrained(str(folder))  # config.json and model.safetensors: the encoder alone
        tokenizer.save_pretrained(str(folder))
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length, "do_lower_case": False}) + "\n")

    nest_transformer(model_dir, write)
    (model_dir / "1_Pooling").mkdir(exist_ok=True)
    Pooling(model.encoder.config.hidden_size, model.mode).save(str(model_dir / "1_Pooling"))
    head = {k[len("head."):]: v for k, v in weights.items() if k.startswith("head.")}
    save_dense_head(model_dir, DENSE, head["weight"], head["bias"])
    write_modules(model_dir, [(TRANSFORMER, ST_MODULES + "Transformer"), ("1_Pooling", ST_MODULES + "Pooling"),
                              (DENSE, ST_MODULES + "Dense")])


TRANSFORMER = "0_Transformer"  # a classifier's transformer module: not at the top level, where pipeline() would load it
ST_MODULES = "sentence_transformers.sentence_transformer.modules."


def nest_transformer(model_dir: Path, write) -> None:
    """Put a sentence-transformers directory's Transformer module in TRANSFORMER/: `write(folder)` writes its files
    there (weights, config.json, tokenizer, sentence_bert_config.json) and the same names are removed from the top
    level. modules.json is the caller's to point at the folder (write_modules)."""
    body = Path(model_dir) / TRANSFORMER
    body.mkdir(exist_ok=True)
    write(body)
    for file in body.iterdir():
        if file.is_file():
            (Path(model_dir) / file.name).unlink(missing_ok=True)


def save_dense_head(model_dir: Path, folder: str, weight, bias) -> None:
    """A linear head (weight (outputs, inputs), bias) as a Dense module with the identity activation in model_dir/folder:
    its outputs are the logits, in sentence-transformers and in encoderfit's inference (`pooled`) alike."""
    from sentence_transformers.sentence_transformer.modules import Dense

    weight, bias = torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32)
    dense = Dense(weight.shape[1], weight.shape[0], bias=True, activation_function=torch.nn.Identity())
    dense.linear.load_state_dict({"weight": weight, "bias": bias})
    (Path(model_dir) / folder).mkdir(exist_ok=True)
    dense.save(str(Path(model_dir) / folder))


def write_modules(model_dir: Path, modules: List) -> None:
    """modules.json: the (folder, type) of each module, in order."""
    entries = [{"idx": i, "name": str(i), "path": folder, "type": kind} for i, (folder, kind) in enumerate(modules)]
    (Path(model_dir) / SENTENCE_MODULES).write_text(json.dumps(entries, indent=2) + "\n")


POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}


def pooling_of(model_dir: Path) -> Dict:
    """What a sentence-transformers directory pools with: {"mode": cls|mean|max, "normalize": bool}."""
    modules_file = Path(model_dir) / SENTENCE_MODULES
    if not modules_file.is_file():
        raise UserError(f"{model_dir}: no modules.json; an embedding model directory is a sentence-transformers one "
                        "(re-train the run, or save the model with SentenceTransformer.save)")
    modules = json.loads(modules_file.read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    unknown = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize", "Dense")]
    if unknown:
        raise UserError(f"{model_dir}: modules {unknown} are not supported by encoderfit's inference (Transformer, "
                        "Pooling, Normalize, Dense are); use SentenceTransformer(DIR) directly")
    pooling = next((m for m in modules if m["type"].endswith("Pooling")), None)
    config = json.loads((Path(model_dir) / pooling["path"] / "config.json").read_text()) if pooling else {}
    mode = pooling_mode(config) if pooling else "cls"
    if mode is None:
        raise UserError(f"{model_dir}: pooling {config} is not one of cls, mean or max; use SentenceTransformer(DIR) directly")
    dense = next((m["path"] for m in modules if m["type"].endswith("Dense")), None)
    # a Dense before Normalize projects the embedding (a distilled student's projection to its teacher's width); one
    # after the pooling with no Normalize is a classifier head whose outputs are logits
    projects = "Dense" in kinds and "Normalize" in kinds and kinds.index("Dense") < kinds.index("Normalize")
    return {"mode": mode, "normalize": "Normalize" in kinds, "dense": dense, "projects": projects}


def pooling_mode(config: Dict) -> Optional[str]:
    """cls, mean or max from a Pooling module's config.json (None: another or a combined mode)."""
    if isinstance(config.get("pooling_mode"), str):  # sentence-transformers 6 writes the mode by name
        chosen = [config["pooling_mode"]]
    else:  # earlier versions: one boolean per mode
        chosen = [mode for key, mode in POOLING_MODES.items() if config.get(key)]
        if any(config.get(k) for k in config if k.startswith("pooling_mode") and k not in POOLING_MODES):
            chosen = []
    return chosen[0] if len(chosen) == 1 and chosen[0] in ("cls", "mean", "max") else None


HEAD_FILE = "classifier.safetensors"  # a SetFit model's logistic-regression head on the embeddings (tasks/classification/setfit.py)


def _dense_layer(model_dir: Path, path: str):
    """A Dense module's linear layer (encoderfit writes the identity activation: the layer's outputs are logits)."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((Path(model_dir) / path / "config.json").read_text())
    activation = str(config.get("activation_function", ""))
    if not activation.endswith("Identity"):
        raise UserError(f"{model_dir}: its Dense module applies {activation}; encoderfit's inference runs Dense layers with the "
                        "identity activation only; use SentenceTransformer(DIR) directly")
    weights = load_file(str(Path(model_dir) / path / "model.safetensors"))
    weights = {k.split(".", 1)[1] if k.startswith("linear.") else k: v for k, v in weights.items()}
    layer = torch.nn.Linear(config["in_features"], config["out_features"], bias="bias" in weights)
    layer.load_state_dict(weights)
    return layer


def pooled(model, model_dir: Path):
    """The transformer with its pooling and normalisation: a module whose `.logits` are the sentence embeddings, or,
    when the directory has a linear head on them (classifier.safetensors: SetFit), that head's class logits."""
    import torch

    setting = pooling_of(model_dir)
    head = None
    if (Path(model_dir) / HEAD_FILE).is_file():
        from safetensors.torch import load_file

        weights = load_file(str(Path(model_dir) / HEAD_FILE))
        head = torch.nn.Linear(weights["weight"].shape[1], weights["weight"].shape[0])
        head.load_state_dict(weights)
    elif setting.get("dense"):  # a linear head fine-tuned with the encoder (pooling.py)
        head = _dense_layer(model_dir, setting["dense"])

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.config = model.config

        def forward(self, input_ids, attention_mask, **extra):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            out = pool(hidden, attention_mask, setting["mode"])
            if setting.get("projects"):
                out = self.head(out)
            if setting["normalize"]:
                out = torch.nn.functional.normalize(out, p=2, dim=1)
            return SimpleNamespace(logits=out if self.head is None or setting.get("projects") else self.head(out))

    module = Pooled()
    module.head = head
    return module
