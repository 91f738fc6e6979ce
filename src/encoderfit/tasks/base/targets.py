"""What a task's targets are: reading and validating them, naming the outputs, encoding them in the
`labels` column, holding out a stratified part, and writing them where a person reads them."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .part import Part


class Targets(Part):
    def canonical(self, ds, data, where: str, need_labels: bool = True):
        """A split with the canonical columns (text, text_pair, labels; the task's own where it reads other shapes)."""
        from ...data.sources import canonical

        return canonical(ds, data, where, need_labels)

    def settle_columns(self, ds, data, where: str):
        """The data settings with the columns a run reads settled from the training split `ds` (raw columns): by
        default a pair inferred from well-known column names, and a warning for text columns no setting reads. A task
        that reads its own shapes of data (its own `canonical`) finds its columns there: `data` as given."""
        if type(self).canonical is not Targets.canonical:
            return data
        from ...data.columns import settle_columns

        return settle_columns(ds, data, where)

    def distill_texts(self, ds):
        """What a teacher labels for a student, from a split's rows: (texts, their pairs or None, their word spans or
        None where the task does not label words). Default: each row's text (and pair), one output per row."""
        from ...data.sources import PAIR, TEXT

        words = [list(map(tuple, w)) for w in ds["words"]] if "words" in ds.column_names else None
        return list(ds[TEXT]), list(ds[PAIR]) if PAIR in ds.column_names else None, words

    def tokenize(self, ds, tokenizer, max_length: int, windows: Optional[Dict], train, role: str):
        """A split's training rows (token ids, labels, length), never padded."""
        from ...data.sources import tokenize

        return tokenize(ds, tokenizer, max_length, windows, first_window_only=role == "train" and train.window_training == "first")

    def targets_array(self, values: list):
        """A split's encoded `labels` column as the metrics take it."""
        from ...data.arrow import as_array

        return as_array(values)

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
