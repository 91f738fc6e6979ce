"""Linear probing before fine-tuning (LP-FT, Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution"): the new output layer is first fitted to convergence on the frozen encoder's
features of the training split, then the whole model is fine-tuned from there.

A freshly initialised head is near-random for the first steps of fine-tuning, and the encoder's features move to
fit it. With many rare outputs (multi-label topics with a few dozen positives) the head's rows for them barely move
in a few epochs: their gradients are a tiny share of a loss averaged over every (text, label) cell. A probe fitted
on the frozen features gives each output a trained row from the start.

The probe is task-agnostic: the features are whatever enters the model's final linear layer (captured by a forward
pre-hook, so a pooled vector, BERT's pooler output or ModernBERT's head output alike), and the objective is the
task's own training loss (cross-entropy, binary cross-entropy, squared error) plus an L2 penalty on the weights,
minimised full-batch with L-BFGS on standardised features. The penalty is chosen on the validation split by the same
loss; the test split is never read.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Callable, Dict, Iterable, List, Tuple

import numpy as np
import torch

PENALTIES = (1e-5, 1e-4, 1e-3, 1e-2)
"""L2 penalties tried first (on standardised features; the loss is a mean): sklearn's default C = 1 is 1/n, about
1e-4 for 10,000 texts. Where the validation loss is lowest at an end of the grid, the grid is extended past that end
tenfold at a time while it keeps falling (by MIN_GAIN), within PENALTY_RANGE: a choice at a grid's edge says the best may lie beyond."""
PENALTY_RANGE = (1e-6, 1.0)
"""Below 1e-6 the fit is in effect unpenalised: on separable labels (a word per label) the weights grow until L-BFGS
stops (raw weights near 7,000 at 1e-8 with MiniLM on benchmarks/quality/rare_labels.py), and the fine-tuned logits'
float32 rounding nears the ONNX export's 1e-4 parity bound. Reuters and debtags choose 1e-5 (1e-6 loses on both)."""
MIN_GAIN = 1e-3
"""The extension stops once a step lowers the validation loss by less than this share of it."""
MAX_ROWS = 100_000
"""At most this many training rows are read for the probe (a seeded sample beyond it): bounded time and memory."""
INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def head_features(net, layer: torch.nn.Module, dataset, collator, batch_size: int = 64) -> Tuple[torch.Tensor, torch.Tensor]:
    """(features entering `layer`, collated labels) for every row of a tokenized dataset, read in batches of similar
    length (no padding to a fixed length), in the dataset's order, with the model in evaluation mode."""
    keep = [c for c in INPUTS if c in dataset.column_names]
    rows = dataset.select_columns(keep)
    order = np.argsort(np.asarray(dataset["length"]), kind="stable")
    captured: List[torch.Tensor] = []
    hook = layer.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().float().cpu()))
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    features, labels = [], []
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = collator([rows[int(i)] for i in order[start:start + batch_size]])
                labels.append(batch.pop("labels"))
                net(**{k: v.to(device) for k, v in batch.items()})
                features.append(captured.pop())
    finally:
        hook.remove()
        net.train(was_training)
    back = torch.as_tensor(np.argsort(order, kind="stable"))
    return torch.cat(features)[back], torch.cat(labels)[back]


def fit_linear(x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, loss: Callable,
               bias: torch.Tensor, fit_bias: bool = True, penalties: Iterable[float] = PENALTIES, max_iter: int = 200) -> Dict:
    """Weights and bias of a linear layer minimising loss(x W^T + b, y) + penalty/2 |W|^2 from W = 0 and b = `bias`
    (kept there unless `fit_bias`), the penalty chosen by the validation loss. Features are standardised for the fit
    and the result mapped back to raw features."""
    mean, std = x.mean(0) if fit_bias else torch.zeros(x.shape[1]), x.std(0).clamp(min=1e-6)  # a fixed bias cannot absorb a shift
    z, z_val = (x - mean) / std, (x_val - mean) / std
    scores = {}

    def fit(penalty: float) -> None:
        w = torch.zeros(bias.numel(), z.shape[1], requires_grad=True)
        b = bias.clone().float().requires_grad_(fit_bias)
        opt = torch.optim.LBFGS([w, b] if fit_bias else [w], lr=1, max_iter=max_iter, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            value = loss(SimpleNamespace(logits=z @ w.T + b), y) + penalty / 2 * (w * w).sum()
            value.backward()
            return value

        opt.step(closure)
        with torch.no_grad():
            val = float(loss(SimpleNamespace(logits=z_val @ w.T + b), y_val))
        scores[penalty] = (val, w.detach(), b.detach())

    for penalty in penalties:
        fit(penalty)
    best = min(scores, key=lambda p: scores[p][0])
    while best in (min(scores), max(scores)):  # at an edge: one more, tenfold past it, while that lowers the loss
        nxt = float(f"{best / 10 if best == min(scores) else best * 10:.0e}")
        if not PENALTY_RANGE[0] <= nxt <= PENALTY_RANGE[1] or nxt in scores:
            break
        fit(nxt)
        gain = 1 - scores[nxt][0] / scores[best][0] if scores[best][0] > 0 else 0.0
        best = nxt if gain > 0 else best
        if gain < MIN_GAIN:
            break
    _, w, b = scores[best]
    return {"weight": w / std, "bias": b - (w / std) @ mean, "penalty": best,
            "validation_loss": {p: round(v[0], 5) for p, v in sorted(scores.items())}}


def probe_head(net, outputs: int, tokenized: Dict, collator, loss: Callable, seed: int) -> Dict:
    """Fit the model's output layer (`outputs` rows) as a linear probe on the frozen features of tokenized["train"]
    with the task's `collator` and training `loss`, the penalty chosen on tokenized["validation"]; the layer's weights
    are replaced. Returns what was done, for the log."""
    from ..core.errors import UserError
    from .loading import output_layer

    layer = output_layer(net, outputs)
    if layer is None:
        raise UserError(f"train.linear_probe: no output layer of {outputs} outputs found in {type(net).__name__}; drop train.linear_probe")
    started = time.monotonic()
    train = tokenized["train"]
    if len(train) > MAX_ROWS:
        from ..data.arrow import sample_rows

        train = sample_rows(train, MAX_ROWS, seed)  # the rows of train.shuffle(seed).select(range(MAX_ROWS))
    from ..core.device import process_device

    home = next(net.parameters()).device
    net.to(process_device())  # the features on the GPU training will use (the Trainer would move it there next anyway)
    try:
        x, y = head_features(net, layer, train, collator)
        x_val, y_val = head_features(net, layer, tokenized["validation"], collator)
    finally:
        net.to(home)
    has_bias = layer.bias is not None
    bias = layer.bias.detach().float().cpu() if has_bias else torch.zeros(layer.out_features)
    fitted = fit_linear(x, y, x_val, y_val, loss, bias, fit_bias=has_bias)
    with torch.no_grad():
        layer.weight.copy_(fitted["weight"].to(layer.weight.dtype))
        if has_bias:
            layer.bias.copy_(fitted["bias"].to(layer.bias.dtype))
    return {"rows": len(train), "features": x.shape[1], "penalty": fitted["penalty"],
            "validation_loss": fitted["validation_loss"], "seconds": round(time.monotonic() - started, 1)}
