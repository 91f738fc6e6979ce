"""Inference: the `Predictor` API and `encoderfit predict`, batched by length under a token budget, for any task.

The model gives logits; the run's task turns them into results (a label with probabilities, a set of labels, a
score with its interval) using the head fitted on validation (model/encoderfit.json).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..data.sources import encode_texts
from ..core.errors import UserError
from .backends import get_backend, is_torch_model
from .rundir import ModelDir, ModelInfo
from ..tasks import check_options, get_task

log = logging.getLogger(__name__)
Texts = Union[str, Sequence[str]]
CPU_MAX_TOKENS, CPU_MAX_BATCH = 4096, 32  # rows x longest row; texts per batch
GPU_MAX_TOKENS, GPU_MAX_BATCH = 16384, 256
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def length_batches(lengths: Sequence[int], max_tokens: int, max_batch_size: int, min_fill: float = 0.5) -> List[List[int]]:
    """Group indices into batches of similar length whose padded size (rows x longest) stays under max_tokens.

    Longest first, so a batch that does not fit in memory fails at once rather than at the end. A text shorter
    than min_fill x the batch's longest starts a new batch, so padding stays under about half of any batch
    (it matters for small mixed sets, such as the requests a server gathers: +27% texts/s measured on VADER).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: List[List[int]] = []
    current: List[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        full = longest * (len(current) + 1) > max_tokens or len(current) >= max_batch_size
        if current and (full or lengths[i] < min_fill * longest):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def aggregate_windows(window_logits, source, n: int, how: str = "mean"):
    """Per text, the mean (or element-wise max) of its windows' logits; `source[w]` is window w's text."""
    import numpy as np

    source = np.asarray(source)
    if how == "max":
        out = np.full((n, window_logits.shape[1]), -np.inf, dtype=np.float32)
        np.maximum.at(out, source, window_logits)
        return out
    out = np.zeros((n, window_logits.shape[1]), dtype=np.float32)
    np.add.at(out, source, window_logits)
    return out / np.maximum(np.bincount(source, minlength=n), 1)[:, None]


class Predictor:
    """A fine-tuned encoder, for any task.

    >>> model = Predictor.from_pretrained("runs/bbc-news")
    >>> model.predict("Shares in the bank fell 5% after profits missed forecasts.")
    {'label': 'business', 'score': 0.97, 'probabilities': {'business': 0.97, 'entertainment': 0.006, ...}}
    >>> model.predict(["first text", "second text"])        # a list gives a list
    >>> Predictor.from_pretrained("runs/debtags").predict("A GTK image viewer")
    {'labels': ['interface::graphical', 'use::viewing', ...], 'probabilities': {...}}
    >>> Predictor.from_pretrained("runs/vader-scores").predict("a gripping, lovely film")
    {'score': 2.41, 'low': 1.32, 'high': 3.5}
    >>> model.predict(["premise"], pairs=["hypothesis"])    # models trained on text pairs
    """

    def __init__(self, model, tokenizer, info: ModelInfo, device=None, max_tokens: Optional[int] = None,
                 max_batch_size: Optional[int] = None, chunk_size: int = 8192, calibrated: bool = True,
                 abstain: bool = False, recheck: Optional[Tuple[Any, float]] = None, precision: str = "auto"):
        self.task = get_task(info.task, "predict", info.options)
        check_options(self.task, calibrated, abstain)
        self.info, self.calibrated, self.abstain = info, calibrated, abstain
        if abstain:  # fail now, not at the first text
            self.task.decoding.decode(_zeros(1, self.task.targets.num_outputs(info.labels)), info.labels, info.head, calibrated, abstain)
        self.onnx = not is_torch_model(model)  # an exported graph (runs/backends: numpy in, logits out)
        self.model = model if self.onnx else self.task.modeling.logits_model(model).eval()
        self.tokenizer = tokenizer
        self.max_length = info.max_length
        self.device = device or ("cpu" if self.onnx else next(model.parameters()).device)
        cpu = str(self.device).startswith("cpu")  # measured on 2 cores: small batches stay in cache (docs/benchmarks.md)
        self.max_tokens = max(max_tokens or (CPU_MAX_TOKENS if cpu else GPU_MAX_TOKENS), self.max_length)
        self.max_batch_size = max_batch_size or (CPU_MAX_BATCH if cpu else GPU_MAX_BATCH)
        self.chunk_size = chunk_size
        self.recheck = recheck  # (exact model, margin): rows whose decision margin is under it are run again
        self.precision = inference_precision(precision, self.device, self.onnx)
        self.source: Optional[ModelDir] = None  # the directory from_pretrained loaded: its fingerprint stamps logged rows

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], device: Optional[str] = None, calibrated: bool = True,
                        abstain: bool = False, backend: str = "torch", int8_recheck: bool = True,
                        packing: Optional[Union[bool, str]] = None, **kwargs) -> "Predictor":
        """Load from a run directory, its model/ directory, or an exported onnx/ directory.

        calibrated: apply the temperature fitted on validation (classification).
        abstain: answer UNKNOWN when the top probability is below the run's chosen threshold (classification).
        backend: a name in runs.backends.BACKENDS: torch, onnx (the exported fp32 model) or onnx-int8 (the quantized
            one); see `encoderfit export`.
        int8_recheck: the backend's re-check, where it has one: with onnx-int8, run the texts whose int8 decision margin
            is under the margin fitted at export (onnx/int8_recheck.json) again through the fp32 file, so near-ties
            keep the fp32 decision.
        packing: padding-free batches (auto, true, false; models/packing.py). Default: the run's train.packing, or auto.
        """
        loaded = get_backend(backend).load(Path(path), device, packing, recheck=int8_recheck and "recheck" not in kwargs)
        if loaded.recheck is not None:
            kwargs.setdefault("recheck", loaded.recheck)
        predictor = cls(loaded.model, loaded.tokenizer, loaded.directory.info(), loaded.device, calibrated=calibrated,
                        abstain=abstain, **kwargs)
        predictor.source = loaded.directory
        return predictor

    @property
    def labels(self) -> List[str]:
        return self.info.labels

    @property
    def head(self) -> Dict[str, Any]:
        return self.info.head

    def _pad(self, enc, keys: List[str], batch: List[int]) -> Dict[str, Any]:
        """One batch padded to its own longest row, on the tokenizer's padding side (tokenizer.pad)."""
        from transformers.data.data_collator import pad_without_fast_tokenizer_warning

        return dict(pad_without_fast_tokenizer_warning(self.tokenizer, {k: [enc[k][i] for i in batch] for k in keys},
                                                       padding=True, return_tensors="np"))

    def _forward(self, model, inputs: Dict[str, Any]):
        if not is_torch_model(model):
            return model(inputs)
        import torch

        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
        return model(**tensors).logits.float().cpu().numpy()

    def _run(self, model, enc, keys: List[str], lengths: List[int], rows: Sequence[int], out=None):
        """Logits of the given encoded rows, length-batched, into `out` at those rows (None: a new array as wide as
        the model's outputs, which for embeddings only the model knows); returns `out`."""
        import numpy as np

        rows = np.asarray(rows)
        for batch in length_batches([lengths[i] for i in rows], self.max_tokens, self.max_batch_size):
            chosen = rows[batch]
            logits = self._forward(model, self._pad(enc, keys, list(chosen)))
            if out is None:
                out = np.empty((len(lengths), logits.shape[1]), dtype=np.float32)
            out[chosen] = logits
        return out

    def run_tokens(self, model, enc, keys: List[str], lengths: List[int], rows: Sequence[int], out: list) -> None:
        """Per-sub-word logits (length, n_outputs) of the given encoded rows, length-batched, into `out` at those rows."""
        import numpy as np

        rows = np.asarray(rows)
        left = self.tokenizer.padding_side == "left"
        for batch in length_batches([lengths[i] for i in rows], self.max_tokens, self.max_batch_size):
            chosen = rows[batch]
            logits = self._forward(model, self._pad(enc, keys, list(chosen)))
            for j, i in enumerate(chosen):
                out[i] = logits[j, logits.shape[1] - lengths[i]:] if left else logits[j, : lengths[i]]

    def _logits_chunk(self, texts: List[str], pairs: Optional[List[str]]):
        import numpy as np
        import torch

        windows = self.info.windows
        with torch.inference_mode():
            enc = encode_texts(self.tokenizer, texts, pairs, self.max_length, windows)
            source = np.asarray(enc.pop("overflow_to_sample_mapping")) if windows else np.arange(len(texts))
            keys = [k for k in INPUT_KEYS if k in enc]
            lengths = [len(ids) for ids in enc["input_ids"]]
            rows = self._run(self.model, enc, keys, lengths, range(len(lengths)))
            out = aggregate_windows(rows, source, len(texts), windows["aggregation"]) if windows else rows
            if self.recheck is not None:
                exact, margin = self.recheck
                close = self.task.decoding.decision_margin(out, self.head) < margin
                again = np.flatnonzero(close[source])  # every window of a text that is close to its decision
                if len(again):
                    self._run(exact, enc, keys, lengths, again, rows)
                    out = aggregate_windows(rows, source, len(texts), windows["aggregation"]) if windows else rows
        return out

    def input_report(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """How many texts are longer than max_length, and what happens to them (truncated, or cut into windows)."""
        import numpy as np

        texts = list(texts)
        pairs = list(pairs) if pairs is not None else None
        overlap = (self.info.windows or {}).get("overlap", 0)
        windows = np.asarray(self.task.modeling.windows_per_text(self.tokenizer, texts, pairs, self.max_length, overlap))
        report = {"texts": len(texts), "longer_than_max_length": float((windows > 1).mean()) if len(texts) else 0.0,
                  "max_length": self.max_length, "treatment": "windows" if self.info.windows else "truncated"}
        if self.info.windows:
            report["windows_per_text"] = float(windows.mean()) if len(texts) else 0.0
        return report

    def logits(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None, words: Optional[Sequence] = None,
               progress: Optional[str] = None):
        """Raw outputs in input order, as the task reads them (its modeling.infer): logits of shape (n_texts,
        n_outputs); for tasks that read tokens, one object per text (NER: `tokens.WordScores`, with `words` each
        text's word spans, default tokens.split_words; QA: the best span). `progress`: a bar with this description,
        advanced a chunk at a time, where the texts span more than one chunk."""
        import numpy as np
        from tqdm.auto import tqdm

        texts = list(texts)
        pairs = list(pairs) if pairs is not None else None
        if pairs is None and self.info.text_pair:
            raise UserError("this model was trained on text pairs: pass the second texts too (pairs=..., or a CSV/JSONL "
                            "input with --text_pair_column)")
        if pairs is not None and not self.info.text_pair:
            raise UserError("this model was trained on single texts, not pairs: drop the second texts")
        if pairs is not None and len(pairs) != len(texts):
            raise UserError(f"got {len(texts)} texts but {len(pairs)} text pairs; pass one pair per text")
        parts = []
        with tqdm(total=len(texts), desc=progress, unit="text", disable=not progress or len(texts) <= self.chunk_size) as bar, \
                autocast(self.precision, self.device):
            for s in range(0, len(texts), self.chunk_size):
                parts.append(self.task.modeling.infer(self, texts[s : s + self.chunk_size],
                                                      pairs[s : s + self.chunk_size] if pairs is not None else None,
                                                      None if words is None else words[s : s + self.chunk_size]))
                bar.update(min(self.chunk_size, len(texts) - s))
        if parts and isinstance(parts[0], list):  # per-text objects (a task that reads tokens): one list
            return [row for part in parts for row in part]
        return np.concatenate(parts) if parts else _zeros(0, self.task.targets.num_outputs(self.labels))

    def text_logits(self, texts: List[str], pairs: Optional[List[str]]):
        """A row of logits per text, (n, n_outputs): long texts truncated, or their windows' logits aggregated."""
        return self._logits_chunk(texts, pairs)

    def sentence_vectors(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None):
        """The model's own sentence vectors, (n_texts, width) float32, batched as `logits` is: an embedding model's
        outputs, else the mean of its encoder's last hidden states over each text's tokens, truncated to max_length
        (models/hidden_vectors.py); None where the model gives none (an exported graph). `monitor`'s embedding test."""
        import torch

        from ..models.hidden_vectors import MeanVectors, NoHiddenStates, encoder_body

        if self.task.supports("embed"):
            return self.logits(texts, pairs)
        body = None if self.onnx else encoder_body(self.model)
        if body is None:
            return None
        enc = encode_texts(self.tokenizer, list(texts), list(pairs) if pairs is not None else None, self.max_length)
        lengths = [len(ids) for ids in enc["input_ids"]]
        try:
            with torch.inference_mode():
                return self._run(MeanVectors(body), enc, [k for k in INPUT_KEYS if k in enc], lengths, range(len(lengths)))
        except NoHiddenStates:
            return None

    def predict(self, texts: Optional[Texts] = None, pairs: Optional[Texts] = None, **named: Texts) -> Union[Dict, List[Dict]]:
        """One text -> one result dict; a list of texts -> a list of result dicts (their keys depend on the task).
        The texts may be passed by the task's names for them: predict(question=..., context=...) for QA."""
        if named:
            texts, pairs = self._named(texts, pairs, named)
        single = isinstance(texts, str)
        logits = self.logits([texts] if single else texts, ([pairs] if single else pairs) if pairs is not None else None)
        results = self.task.decoding.decode(logits, self.labels, self.head, self.calibrated, self.abstain)
        return results[0] if single else results

    def _named(self, texts, pairs, named: Dict[str, Texts]):
        first, second = self.task.inputs
        unknown = sorted(set(named) - {first, second})
        if unknown or texts is not None or pairs is not None:
            raise UserError(f"predict: pass the texts as {first}=... and {second}=... (the {self.task.name} task's names), "
                            f"or as texts and pairs; got {sorted(named) + [n for n, v in (('texts', texts), ('pairs', pairs)) if v is not None]}")
        if first not in named:
            raise UserError(f"predict: {first}=... is missing")
        return named[first], named.get(second)

    def predict_proba(self, texts: Texts, pairs: Optional[Texts] = None):
        """Class (or label) probabilities, shape (n_texts, n_labels); calibrated when the run has a temperature."""
        single = isinstance(texts, str)
        logits = self.logits([texts] if single else texts, ([pairs] if single else pairs) if pairs is not None else None)
        return self.task.decoding.probabilities(logits, self.head, self.calibrated)


Classifier = Predictor  # the name before multi-label and regression arrived


def inference_precision(requested: str, device, onnx: bool = False) -> str:
    """fp32 or bf16 for a Predictor. auto: bf16 autocast on a CUDA GPU that does bf16 natively (a run trained in fp32
    passes "fp32"), fp32 everywhere else: on a CPU nothing changes (and ONNX runs its own precision)."""
    from ..core.device import cuda_bf16_native

    if requested not in ("auto", "fp32", "bf16"):
        raise UserError(f"precision: '{requested}' is not one of auto, fp32, bf16")
    if onnx:
        return "fp32"
    if requested == "auto":
        return "bf16" if str(device).startswith("cuda") and cuda_bf16_native() else "fp32"
    return requested


def autocast(precision: str, device):
    """bf16 autocast on the predictor's device (logits come back as fp32), or nothing."""
    import contextlib

    if precision != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _zeros(rows: int, columns: int):
    import numpy as np

    return np.zeros((rows, columns), dtype=np.float32)
