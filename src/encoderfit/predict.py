"""Inference: the `Classifier` API and `encoderfit predict`, batched by length under a token budget."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Optional, Sequence, Union

import numpy as np
import torch
from transformers import AutoConfig

from .config import ModelArgs, RunConfig
from .data import decode_utf8, read_table
from .errors import UserError
from .files import atomic_file, check_writable
from .modeling import load_for_inference, load_tokenizer, model_limit

log = logging.getLogger(__name__)
Texts = Union[str, Sequence[str]]
CALIBRATION_FILE = "calibration.json"  # in the model directory: temperature and abstention threshold
BACKENDS = ("torch", "onnx", "onnx-int8")
CPU_MAX_TOKENS, CPU_MAX_BATCH = 4096, 32  # rows x longest row; texts per batch
GPU_MAX_TOKENS, GPU_MAX_BATCH = 16384, 256
UNKNOWN = "UNKNOWN"


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


def model_dir_of(path: Path) -> Path:
    """A run directory -> its model/ directory; a model directory -> itself."""
    path = Path(path)
    model_dir = path / "model" if (path / "model" / "config.json").is_file() else path
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{path}: no model here (config.json is missing); pass a run directory or its model/ directory")
    return model_dir


class OnnxModel:
    """An exported model run by onnxruntime, with what Classifier needs: `config` and numpy inputs -> logits."""

    def __init__(self, path: Path, config, spin: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # every core, as PyTorch uses
        if not spin:  # idle threads sleep at once rather than spin, leaving the cores to the other session
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.config = config

    def __call__(self, batch: Dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], {k: batch[k].astype(np.int64) for k in self.inputs})[0]


def top_margin(logits: np.ndarray) -> np.ndarray:
    """Per row: the top logit minus the runner-up's (how far a row is from changing its label)."""
    if logits.shape[1] < 2:
        return np.full(len(logits), np.inf, dtype=logits.dtype)
    top2 = np.partition(logits, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _int8_recheck(path: Path, config) -> Optional[tuple]:
    """(fp32 OnnxModel, margin) when the export fitted a re-check margin for its int8 model (see export.py)."""
    from .export import FP32_FILE, RECHECK_FILE

    file, fp32 = path.parent / RECHECK_FILE, path.parent / FP32_FILE
    if not file.is_file():
        return None
    margin = json.loads(file.read_text()).get("margin")
    if not margin or not fp32.is_file():
        return None
    return OnnxModel(fp32, config, spin=False), float(margin)


def _onnx_file(path: Path, backend: str) -> Path:
    from .export import FP32_FILE, INT8_FILE, ONNX_DIR

    directory = path / ONNX_DIR if (path / ONNX_DIR).is_dir() else path
    file = directory / (INT8_FILE if backend == "onnx-int8" else FP32_FILE)
    if not file.is_file():
        flag = " --quantize int8" if backend == "onnx-int8" else ""
        raise UserError(f"{path}: no {file.name}; export it first with `encoderfit export {path}{flag}`")
    return file


class Classifier:
    """A fine-tuned text classifier.

    >>> clf = Classifier.from_pretrained("runs/bbc")
    >>> clf.predict("Shares in the bank fell 5% after profits missed forecasts.")
    {'label': 'business', 'score': 0.97, 'probabilities': {'business': 0.97, 'entertainment': 0.006, ...}}
    >>> clf.predict(["first text", "second text"])        # a list gives a list
    >>> clf.predict_proba(["first text"]).shape            # (n_texts, n_labels)
    """

    def __init__(self, model, tokenizer, max_length: int, device: Optional[torch.device] = None,
                 max_tokens: Optional[int] = None, max_batch_size: Optional[int] = None, chunk_size: int = 8192,
                 temperature: float = 1.0, threshold: Optional[float] = None, abstain: bool = False,
                 recheck: Optional[tuple] = None):
        if abstain and threshold is None:
            raise UserError("abstain needs a threshold; evaluate the run with --report.target_accuracy to choose one")
        self.temperature = temperature
        self.threshold = threshold
        self.abstain = abstain
        self.onnx = isinstance(model, OnnxModel)
        self.model = model if self.onnx else model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = device or (torch.device("cpu") if self.onnx else next(model.parameters()).device)
        cpu = self.device.type == "cpu"  # measured on 2 cores: small batches stay in cache (docs/benchmarks.md)
        self.max_tokens = max(max_tokens or (CPU_MAX_TOKENS if cpu else GPU_MAX_TOKENS), max_length)
        self.max_batch_size = max_batch_size or (CPU_MAX_BATCH if cpu else GPU_MAX_BATCH)
        self.chunk_size = chunk_size
        self.recheck = recheck  # (exact model, margin): rows whose top-2 logit margin is under it are run again

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], device: Optional[str] = None, calibrated: bool = True,
                        abstain: bool = False, backend: str = "torch", int8_recheck: bool = True,
                        **kwargs) -> "Classifier":
        """Load from a run directory or a plain model directory.

        calibrated: divide logits by the temperature fitted on validation (model/calibration.json), if any.
        abstain: answer UNKNOWN when the top probability is below the run's chosen threshold.
        backend: torch, onnx (the exported fp32 model) or onnx-int8 (the quantized one); see `encoderfit export`.
        int8_recheck: with onnx-int8, run the texts whose int8 top-2 margin is under the margin fitted at export
            (onnx/int8_recheck.json) again through the fp32 file, so near-ties keep the fp32 label.
        """
        path = Path(path)
        if backend not in BACKENDS:
            raise UserError(f"--backend: '{backend}' is not one of {list(BACKENDS)}")
        if backend == "torch":
            model_dir = model_dir_of(path)
            model, tokenizer, dev = load_for_inference(str(model_dir), device)
        else:
            file = _onnx_file(path, backend)
            model_dir, dev = file.parent, torch.device("cpu")
            tokenizer = load_tokenizer(ModelArgs(name_or_path=str(model_dir)))
            config = AutoConfig.from_pretrained(model_dir)
            if int8_recheck and backend == "onnx-int8":
                kwargs.setdefault("recheck", _int8_recheck(file, config))
            model = OnnxModel(file, config, spin=kwargs.get("recheck") is None)
        # a run saves its max_length as the tokenizer's model_max_length, so plain pipelines truncate alike
        max_length = model_limit(model.config, tokenizer)
        saved = json.loads((model_dir / CALIBRATION_FILE).read_text()) if (model_dir / CALIBRATION_FILE).is_file() else {}
        temperature = (saved.get("temperature") or 1.0) if calibrated else 1.0
        return cls(model, tokenizer, max_length, dev, temperature=temperature, threshold=saved.get("threshold"),
                   abstain=abstain, **kwargs)

    def _pad(self, enc, keys: List[str], batch: List[int]) -> Dict[str, np.ndarray]:
        """One batch as arrays padded to its own longest row (on the tokenizer's padding side)."""
        longest = max(len(enc["input_ids"][i]) for i in batch)
        left = self.tokenizer.padding_side == "left"
        arrays = {}
        for key in keys:
            fill = self.tokenizer.pad_token_id if key == "input_ids" else 0
            array = np.full((len(batch), longest), fill, dtype=np.int64)
            for row, i in enumerate(batch):
                seq = enc[key][i]
                if left:
                    array[row, longest - len(seq):] = seq
                else:
                    array[row, : len(seq)] = seq
            arrays[key] = array
        return arrays

    def _forward(self, inputs: Dict[str, np.ndarray]) -> np.ndarray:
        if self.onnx:
            return self.model(inputs)
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
        return self.model(**tensors).logits.float().cpu().numpy()

    @property
    def labels(self) -> List[str]:
        return [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    @torch.inference_mode()
    def _logits_chunk(self, texts: List[str], pairs: Optional[List[str]]) -> np.ndarray:
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        lengths = [len(ids) for ids in enc["input_ids"]]
        out = np.empty((len(texts), self.model.config.num_labels), dtype=np.float32)
        for batch in length_batches(lengths, self.max_tokens, self.max_batch_size):
            out[batch] = self._forward(self._pad(enc, keys, batch))
        if self.recheck is not None:
            exact, margin = self.recheck
            close = np.flatnonzero(top_margin(out) < margin)
            for batch in length_batches([lengths[i] for i in close], self.max_tokens, self.max_batch_size):
                rows = close[batch]
                out[rows] = exact(self._pad(enc, keys, list(rows)))
        return out

    def logits(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> np.ndarray:
        """Raw logits, shape (n_texts, n_labels), in input order."""
        texts = list(texts)
        pairs = list(pairs) if pairs is not None else None
        if pairs is not None and len(pairs) != len(texts):
            raise UserError(f"got {len(texts)} texts but {len(pairs)} text pairs; pass one pair per text")
        parts = [
            self._logits_chunk(texts[s : s + self.chunk_size], pairs[s : s + self.chunk_size] if pairs is not None else None)
            for s in range(0, len(texts), self.chunk_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.model.config.num_labels), dtype=np.float32)

    def predict_proba(self, texts: Texts, pairs: Optional[Texts] = None) -> np.ndarray:
        """Class probabilities (calibrated when the run has a temperature), shape (n_texts, n_labels)."""
        single = isinstance(texts, str)
        logits = self.logits([texts] if single else texts, ([pairs] if single else pairs) if pairs is not None else None)
        return torch.softmax(torch.from_numpy(logits) / self.temperature, dim=-1).numpy()

    def predict(self, texts: Texts, pairs: Optional[Texts] = None) -> Union[Dict, List[Dict]]:
        """One text -> one result dict; a list of texts -> a list of result dicts (label, score, probabilities)."""
        probs = self.predict_proba(texts, pairs)
        results = [self._result(p) for p in probs]
        return results[0] if isinstance(texts, str) else results

    def _result(self, probs: np.ndarray) -> Dict:
        best = int(probs.argmax())
        unknown = self.abstain and probs[best] < self.threshold
        return {
            "label": UNKNOWN if unknown else self.labels[best],
            "score": float(probs[best]),
            "probabilities": {name: float(p) for name, p in zip(self.labels, probs)},
        }


def read_texts(source: str, text_column: str, text_pair_column: Optional[str] = None):
    """Texts (and pairs) from stdin ('-'), a .txt file (one per line), or a table file's column."""
    if source == "-":
        return decode_utf8(sys.stdin.buffer.read(), "stdin").splitlines(), None
    path = Path(source)
    if path.is_dir():
        raise UserError(f"--input: {source} is a directory; pass a file (.txt, one text per line, or CSV/TSV/JSON/JSONL/Parquet)")
    if not path.is_file():
        raise UserError(f"--input: file '{source}' does not exist")
    if path.suffix.lower() == ".txt":
        return decode_utf8(path.read_bytes(), str(path)).splitlines(), None
    table = read_table(path)
    for column in filter(None, (text_column, text_pair_column)):
        if column not in table.column_names:
            raise UserError(f"{path}: no column '{column}'; columns are {table.column_names}; set --text_column")
    texts = ["" if t is None else str(t) for t in table[text_column]]
    pairs = ["" if t is None else str(t) for t in table[text_pair_column]] if text_pair_column else None
    return texts, pairs


def drop_empty(texts: List[str], pairs: Optional[List[str]]) -> tuple:
    """Texts that are empty or only whitespace are skipped, as the server refuses them; the log says which rows."""
    keep = [i for i, t in enumerate(texts) if t.strip()]
    if len(keep) < len(texts):
        empty = [i + 1 for i in range(len(texts)) if not texts[i].strip()]
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        log.warning("warning: skipped %d empty input line(s)/row(s) (%s): no text to label", len(empty), shown)
    return [texts[i] for i in keep], [pairs[i] for i in keep] if pairs is not None else None


def _rows(texts: List[str], results: List[Dict]) -> Iterator[Dict]:
    for text, result in zip(texts, results):
        yield {"text": text, **result}


def write_predictions(rows: Iterator[Dict], labels: List[str], handle, fmt: str) -> None:
    if fmt == "csv":
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "score", *[f"prob_{name}" for name in labels]])
        for row in rows:
            writer.writerow([row["text"], row["label"], f"{row['score']:.6f}", *[f"{row['probabilities'][n]:.6f}" for n in labels]])
    else:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def predict(
    run: Path,
    input: str = "-",
    output: Optional[Path] = None,
    text_column: Optional[str] = None,
    text_pair_column: Optional[str] = None,
    device: Optional[str] = None,
    max_tokens: Optional[int] = None,
    calibrated: bool = True,
    abstain: bool = False,
    backend: Literal["torch", "onnx", "onnx-int8"] = "torch",
    int8_recheck: bool = True,
) -> Path | None:
    """Label texts with a trained run: one JSONL (or CSV) row per text with label, score and all class probabilities.

    Args:
        run: Run directory written by `encoderfit train` (or a model directory).
        input: Texts to label: '-' for stdin (one per line), a .txt file (one per line), or a CSV/TSV/JSON/JSONL/Parquet file.
        output: Where to write; .jsonl or .csv. Default: JSONL on stdout.
        text_column: Column of a table input holding the text. Default: the run's data.text_column.
        text_pair_column: Column holding the second text of a pair. Default: the run's data.text_pair_column.
        device: Device to run on (cpu, cuda, cuda:1). Default: cuda when available.
        max_tokens: Token budget of one batch (rows x longest row); texts are sorted by length into batches.
            Default: 4096 on CPU (at most 32 texts), 16384 on GPU (at most 256).
        calibrated: Apply the temperature fitted on validation to the probabilities.
        abstain: Answer UNKNOWN when the top probability is below the run's threshold (see `eval --report.target_accuracy`).
        backend: torch, onnx or onnx-int8 (the latter two after `encoderfit export RUN [--quantize int8]`).
        int8_recheck: With onnx-int8, run near-ties (int8 top-2 margin under the one fitted at export) again in fp32.
    """
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"--max_tokens must be at least 1 (got {max_tokens})")
    run = Path(run)
    saved = RunConfig.load(run).data if (run / "config.yaml").is_file() else None
    text_column = text_column or (saved.text_column if saved else "text")
    text_pair_column = text_pair_column or (saved.text_pair_column if saved else None)
    fmt = "csv" if output and Path(output).suffix.lower() == ".csv" else "jsonl"
    if output and Path(output).suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise UserError(f"--output: unsupported file type '{Path(output).suffix}'; use .jsonl or .csv")
    if output:
        check_writable(Path(output), "--output")
    texts, pairs = drop_empty(*read_texts(input, text_column, text_pair_column))
    clf = Classifier.from_pretrained(run, device=device, max_tokens=max_tokens, calibrated=calibrated, abstain=abstain,
                                   backend=backend, int8_recheck=int8_recheck)
    results = clf.predict(texts, pairs) if texts else []
    if output is None:
        write_predictions(_rows(texts, results), clf.labels, sys.stdout, fmt)
        return None
    with atomic_file(Path(output)) as handle:
        write_predictions(_rows(texts, results), clf.labels, handle, fmt)
    log.info("wrote %d predictions to %s", len(texts), output)
    return Path(output)
