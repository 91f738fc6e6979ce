"""What a task is: everything about one kind of target that the stages (train, tune, eval, predict, export, serve,
report) need to know, behind one interface. Stages call these methods and contain no task branches; a new task is
a subclass in its own module plus an entry in `tasks.TASKS`.

Numbers flow as numpy arrays: `targets` are what `encode` stored in the `labels` column (class ids, multi-hot
rows, floats) and `logits` are the model's raw outputs, shape (n, num_outputs). The `head` is the JSON-able state
fitted on validation after training (temperature and threshold, per-label thresholds, a conformal interval),
saved in the model directory and applied by predict, serve and export.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

from ..core.errors import UserError

Result = Dict[str, Any]


class Task:
    name: ClassVar[str]
    """The --task value, and the name saved in config.yaml and encoderfit.json."""
    problem_type: ClassVar[str]
    """transformers' config.problem_type: what plain pipelines and the model's own loss go by."""
    pipeline_tag: ClassVar[str] = "text-classification"
    """The hub pipeline tag of the model card (and the transformers pipeline that loads the model)."""
    output_noun: ClassVar[str] = "labels"
    """What the outputs are called in messages and on the report ("labels", "target")."""
    auto_model: ClassVar[str] = "AutoModelForSequenceClassification"
    """The transformers Auto class that builds the model with this task's output layer."""
    pages: ClassVar[Optional[str]] = None
    """The module of tasks/ that shows results: report_sections(metrics, cfg, noise) -> HTML sections,
    card_sections(metrics, cfg) -> markdown lines, print_details(results, split, labels, console)."""
    options: ClassVar[frozenset] = frozenset()
    """Inference options the task honours: "calibrated" (apply the fitted temperature), "abstain" (UNKNOWN under
    the fitted threshold)."""
    metrics_for_best: ClassVar[Dict[str, bool]] = {"loss": False}
    """Validation metrics that can choose the checkpoint kept -> whether greater is better."""
    summary: ClassVar[Tuple[Tuple[str, str], ...]] = ()
    """(metric key, column title) of the summary tables, in the terminal, the report and the card. The first is the
    task's primary metric: the verdict against the baseline is about it."""
    lower_is_better: ClassVar[frozenset] = frozenset()
    """Metrics where less is better (errors, losses); every other is better greater."""
    stages: ClassVar[frozenset] = frozenset({"train", "tune", "eval", "predict", "export", "serve", "report"})
    """The stages that can run on this task's runs and models."""
    unsupported: ClassVar[str] = ""
    """What to do instead, for a stage this task lacks."""
    baseline_name: ClassVar[str] = "TF-IDF baseline"
    """What the baseline is called in the verdict (and `baseline_plain`, in plain words with its article)."""
    baseline_plain: ClassVar[str] = "a bag of words"
    granularity: ClassVar[str] = "text"
    """What gets an output: each "text" (logits (n, num_outputs)), or each "word" (tokens.WordScores per text)."""
    always_windows: ClassVar[bool] = False
    """Texts longer than max_length are always cut into windows (never truncated), whatever model.long_texts says."""
    output_axes: ClassVar[Dict[int, str]] = {0: "batch"}
    """The dynamic axes of the exported ONNX graph's logits."""
    embeds: ClassVar[bool] = False
    """Its outputs are text embeddings (one normalised vector per text): embed, search and the server's /v1/embed apply."""
    int8_recheck: ClassVar[bool] = True
    """The task makes decisions that an int8 export can flip, so export fits a margin to re-check near-ties in fp32."""
    cross_validation: ClassVar[Optional[str]] = None
    """Why `encoderfit cv` cannot pool this task's out-of-fold predictions (None: it can)."""
    exact_test: ClassVar[Optional[str]] = None
    """The key of `paired_test`'s result whose p-value the verdict uses (else the paired bootstrap's)."""

    # ---------------------------------------------------------------- data

    def canonical(self, ds, data, where: str, need_labels: bool = True):
        """A split with the canonical columns (text, text_pair, labels; the task's own where it reads other shapes)."""
        from ..data.sources import canonical

        return canonical(ds, data, where, need_labels)

    def tokenize(self, ds, tokenizer, max_length: int, windows: Optional[Dict], train, role: str):
        """A split's training rows (token ids, labels, length), never padded."""
        from ..data.sources import tokenize

        return tokenize(ds, tokenizer, max_length, windows, first_window_only=role == "train" and train.window_training == "first")

    def targets_array(self, values: list):
        """A split's encoded `labels` column as the metrics take it."""
        import numpy as np

        return np.asarray(values)

    def logits_to_columns(self, logits) -> Dict[str, list]:
        """Model outputs -> columns of the saved predictions file."""
        return {"logits": [[float(v) for v in row] for row in logits]}

    def logits_from_columns(self, rows: Dict[str, list], labels: List[str], where: str):
        import numpy as np

        logits = np.asarray(rows["logits"], dtype=np.float32).reshape(len(rows["text"]), -1)
        if logits.shape[1] != self.num_outputs(labels):
            raise UserError(f"{where}: {logits.shape[1]} logits per row, but the run has {self.num_outputs(labels)} outputs; "
                            "re-run `encoderfit eval` on the run")
        return logits

    # ---------------------------------------------------------------- targets

    def read_targets(self, ds, data, where: str) -> List[Any]:
        """Each row's target as a Python value, validated (a bad row is a UserError naming it)."""
        raise NotImplementedError

    def target_column(self, ds, data) -> str:
        """The column of the data that the targets of canonical split `ds` were read from: what messages name."""
        return data.label_column

    def label_names(self, targets: List[Any], feature, column: str, where: str) -> List[str]:
        """The ordered output names, from the training split (class or label names; the target's name)."""
        raise NotImplementedError

    def encode(self, ds, targets: List[Any], labels: List[str], where: str):
        """`ds` with its `labels` column replaced by the encoded targets."""
        raise NotImplementedError

    def holdout(self, ds, size: float, seed: int, single_note: str):
        """(kept, held-out) parts of `ds`, `size` held out, stratified the task's way."""
        raise NotImplementedError

    def num_outputs(self, labels: List[str]) -> int:
        return len(labels)

    def targets_to_json(self, targets, labels: List[str]) -> list:
        """Encoded targets -> what a person reads in predictions files (names, lists of names, numbers)."""
        raise NotImplementedError

    def targets_from_json(self, values: list, labels: List[str], where: str):
        raise NotImplementedError

    def summarize_targets(self, targets, labels: List[str]) -> Dict[str, Any]:
        """Training-split statistics the loss, metrics and head need (class counts, mean and spread...)."""
        return {}

    # ---------------------------------------------------------------- model and training

    def model_kwargs(self, labels: List[str]) -> Dict[str, Any]:
        """from_pretrained keyword arguments for the output layer: num_labels, id2label, label2id, problem_type."""
        return {"num_labels": self.num_outputs(labels), "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)}, "problem_type": self.problem_type}

    def loss(self, stats: Dict[str, Any], train) -> Callable:
        """The training loss (outputs, labels, num_items_in_batch) -> scalar: summed over the step's examples and
        divided by their count over all processes, so 1 or N processes and any accumulation give the same mean."""
        raise NotImplementedError

    def trainer_metrics(self, labels: List[str], stats: Dict[str, Any]) -> Callable:
        """compute_metrics for the Trainer's evaluations: logits and targets -> {metric: value}."""
        raise NotImplementedError

    def load_model(self, args, labels: List[str], max_length: int, stats: Optional[Dict[str, Any]] = None):
        """The model to fine-tune: the encoder with this task's output layer (a new layer's bias at the training
        split's priors, where the task has them)."""
        from ..models.loading import load_model
        from ..models.pooling import pooled_classifier

        bias = self.output_bias(stats) if stats else None
        return pooled_classifier(args, self, labels, bias) or load_model(args, self, labels, bias)

    def output_bias(self, stats: Dict[str, Any]):
        """A new output layer's starting bias from the training split's statistics (None: the architecture's)."""
        return None

    def build_trainer(self, net, tokenizer, labels: List[str], stats: Dict[str, Any], tokenized: Dict, train, precision: str,
                      workdir, callbacks: Optional[list] = None):
        """The Trainer that fine-tunes `net` (trainer.build_trainer: this task's loss, metrics and collator)."""
        from ..models.trainer import build_trainer

        return build_trainer(net, tokenizer, self, labels, stats, tokenized, train, precision, workdir, callbacks)

    def inference_model(self, model, model_dir):
        """The loaded model as inference runs it (a module whose outputs have `.logits`): a sentence-transformers
        directory's transformer with its pooling (and its linear head, for classification on embeddings)."""
        from ..models.loading import is_sentence_model

        if is_sentence_model(model_dir):
            from ..models.pooling import pooled

            return pooled(model, model_dir)
        return model

    def collator(self, tokenizer):
        """Batches for the Trainer: each padded to its own longest row (a multiple of 8 on GPUs)."""
        from transformers import DataCollatorWithPadding

        from ..core.device import pad_multiple

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple())

    def preprocess_logits(self) -> Optional[Callable]:
        """What the Trainer keeps of each evaluation batch's logits (None: all of them)."""
        return None

    def derive_metrics(self, metrics: Dict[str, float], prefix: str) -> Dict[str, float]:
        """Evaluation metrics computed from the Trainer's others (e.g. perplexity from the loss)."""
        return {}

    def after_training(self, model_dir, stats: Dict[str, Any], trainer=None) -> bool:
        """Adjust the saved weights once training is over; True when they changed (the in-memory model is stale)."""
        return False

    # ---------------------------------------------------------------- evaluation

    def fit_head(self, validation, labels: List[str], cfg) -> Dict[str, Any]:
        """The head state fitted on validation predictions: what predict/serve/export apply."""
        return {}

    def analyse(self, preds, labels: List[str], head: Dict[str, Any], cfg) -> Dict[str, Any]:
        """Every metric of one split's predictions, under the given head."""
        raise NotImplementedError

    def head_summary(self, head: Dict[str, Any], analysed: Dict[str, Dict]) -> Dict[str, Any]:
        """The head's decisions with what they do on each analysed split (metrics.json's `head` section)."""
        return dict(head)

    def outputs(self, predictor, texts: List[str], pairs: Optional[List[str]], words=None):
        """A split's outputs as its predictions keep them (the Predictor's logits)."""
        return predictor.logits(texts, pairs, words)

    def baseline(self, splits, labels: List[str], cfg=None) -> Optional[Dict[str, Any]]:
        """A simple model on the same split (TF-IDF based): {"metrics": its test metrics and choices, "logits": its
        test outputs in the form the model's take (so the same metric functions apply), "head": its decisions}."""
        return None

    def interval_metrics(self, preds, labels: List[str], head: Dict[str, Any]) -> Tuple[Dict[str, Callable], Any]:
        """({metric: f(indices) -> value on those examples}, strata for a stratified bootstrap or None): the metrics
        that get confidence intervals and paired comparisons with the baseline."""
        return {}, None

    def paired_test(self, model, baseline, labels: List[str], head: Dict[str, Any], baseline_head: Dict[str, Any]) -> Optional[Dict]:
        """An exact test of the model against the baseline on the same examples, where the task has one."""
        return None

    def greater_is_better(self, metric: str) -> bool:
        return metric not in self.lower_is_better

    def review_train(self, predictions: Callable, labels: List[str], head: Dict[str, Any], cfg) -> Optional[List[Dict]]:
        """Training examples worth a person's look (suspected label noise), or None when the task has none.
        `predictions()` gives the training split's predictions (computed, or reused, only when called)."""
        return None

    # ---------------------------------------------------------------- inference

    def decode(self, logits, labels: List[str], head: Dict[str, Any], calibrated: bool = True,
               abstain: bool = False) -> List[Result]:
        """Raw logits -> one result dict per row."""
        raise NotImplementedError

    def probabilities(self, logits, head: Dict[str, Any], calibrated: bool = True):
        raise UserError(f"the {self.name} task has no class probabilities; use predict()")

    def decision_margin(self, logits, head: Dict[str, Any]):
        """Per row, how far the logits are from changing the decision (inf where nothing is decided)."""
        import numpy as np

        return np.full(len(logits), np.inf)

    def margin_drop(self, quick, exact, head: Dict[str, Any]):
        """Per row, how much `quick` (e.g. int8) logits overstate the decision margin of the `exact` ones: a
        decision can only change where the quick margin is under this."""
        import numpy as np

        return np.zeros(len(quick))

    def compare(self, reference, got, head: Dict[str, Any]) -> Dict[str, float]:
        """Parity of two models' logits on the same texts (export): max difference and decision agreement."""
        import numpy as np

        return {"max_abs_logit_diff": float(np.abs(got - reference).max()) if len(got) else 0.0}

    def csv_header(self, labels: List[str]) -> List[str]:
        raise NotImplementedError

    def csv_row(self, result: Result, labels: List[str]) -> List[str]:
        raise NotImplementedError

    def signals(self, result: Result) -> Dict[str, Any]:
        """What the server's monitoring records for one result: any of labels (counted), confidence (a probability),
        score (a predicted number), abstained (bool)."""
        return {}

    # ---------------------------------------------------------------- presentation

    def headline(self, metrics: Dict[str, Any]) -> List[Tuple[str, str, str]]:
        """(title, metrics.json path, format) of the report's cards."""
        return [(title, f"test.{key}", ".4f") for key, title in self.summary[:2]]

    def _pages(self):
        import importlib

        return importlib.import_module(f".{self.pages}", __package__) if self.pages else None

    def report_sections(self, metrics: Dict[str, Any], cfg, noise: List[Dict]) -> List[str]:
        """The report's task-specific HTML sections."""
        return self._pages().report_sections(metrics, cfg, noise) if self.pages else []

    def card_results(self, metrics: Dict[str, Any]) -> List[Tuple[str, float, str, Dict]]:
        """(metric type, value, name, args) of the model card's eval results (test split)."""
        return [(key, metrics["test"][key], f"Test {title}", {}) for key, title in self.summary if key in metrics["test"]]

    def intended_use(self, labels: List[str]) -> str:
        """The model card's first sentence on use: what the model does, and the limit particular to the task."""
        return "Predicting for text like the training data."

    def plain_usage(self, cfg) -> List[str]:
        """The model card's lines of Python that load the model without encoderfit."""
        if cfg.resolved.get("pooling"):
            return ["# or sentence-transformers (its Dense module gives the logits):",
                    "from sentence_transformers import SentenceTransformer",
                    'logits = SentenceTransformer("path/to/model").encode(["a text"])']
        if getattr(cfg.model, "head", "linear") == "embedding":
            return ["# or sentence-transformers (the classifier is model/classifier.safetensors: logits = W @ embedding + b):",
                    "from sentence_transformers import SentenceTransformer",
                    'encoder = SentenceTransformer("path/to/model")']
        return ["# or plain transformers:", "from transformers import pipeline", f'pipe = pipeline("{self.pipeline_tag}", model="path/to/model")']

    def card_sections(self, metrics: Dict[str, Any], cfg) -> List[str]:
        """Markdown paragraphs of the model card about the head (calibration, thresholds, intervals)."""
        return self._pages().card_sections(metrics, cfg) if self.pages else []

    def print_details(self, results: Dict[str, Any], split: str, labels: List[str], console) -> None:
        """What `encoderfit eval` prints after the summary table."""
        if self.pages:
            self._pages().print_details(results, split, labels, console)


def check_options(task: Task, calibrated: bool, abstain: bool) -> None:
    """Inference options only make sense for tasks that have them."""
    if abstain and "abstain" not in task.options:
        raise UserError(f"--abstain: the {task.name} task has no abstention threshold; drop --abstain")


def tfidf_features(splits, roles: Sequence[str] = ("train", "validation", "test")):
    """TF-IDF word 1-2-grams fitted on train: {role: sparse matrix} (a pair is joined with a separator token)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    def texts(ds):
        if "text_pair" in ds.column_names:
            return [f"{a} [SEP] {b}" for a, b in zip(ds["text"], ds["text_pair"])]
        return list(ds["text"])

    data = {role: texts(splits.as_dict()[role]) for role in roles}
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(data["train"]) >= 1000 else 1, sublinear_tf=True)
    return {role: (vectorizer.fit_transform if role == "train" else vectorizer.transform)(t) for role, t in data.items()}
