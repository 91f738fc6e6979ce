"""Structured pruning on a transformers encoder's own modules: whole layers out of its layer list, FFN neurons out of
its intermediate and output linear layers (transformers' `prune_linear_layer`), the config changed to say so. The
result is a plain model of a smaller config (fewer `num_hidden_layers`, a smaller `intermediate_size`): no masks,
nothing that a fresh `from_pretrained` of the saved directory does not rebuild.

Attention heads are not removed: BERT, MPNet and ModernBERT derive head_dim = hidden_size / num_attention_heads, so a
config with fewer heads at the same hidden size has wider heads, not fewer ones; their configs cannot express it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from ..core.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Where a family keeps what pruning changes, relative to its base model (the bare encoder)."""

    layers: str  # dotted path of the nn.ModuleList of layers
    ffn_in: str  # in each layer: the linear layer hidden -> intermediate (GLU: -> 2 x intermediate, input then gate)
    ffn_out: str  # in each layer: the linear layer intermediate -> hidden
    glu: bool = False
    fixed_first: bool = False  # the first layer is built differently (ModernBERT: no attention norm): never dropped


BERT_LAYOUT = Layout("encoder.layer", "intermediate.dense", "output.dense")
LAYOUTS: Dict[str, Layout] = {
    "bert": BERT_LAYOUT, "roberta": BERT_LAYOUT, "xlm-roberta": BERT_LAYOUT, "camembert": BERT_LAYOUT,
    "electra": BERT_LAYOUT, "mpnet": BERT_LAYOUT,
    "modernbert": Layout("layers", "mlp.Wi", "mlp.Wo", glu=True, fixed_first=True),
}
HEADS_NOT_EXPRESSIBLE = ("compress.heads: attention heads cannot be removed here: BERT, MPNet and ModernBERT configs "
                         "derive head_dim = hidden_size / num_attention_heads, so fewer heads would mean wider heads; "
                         "drop --compress.heads (layers and FFN neurons are pruned)")


def layout_of(config) -> Layout:
    """The family's layout, or one line naming the families that can be pruned."""
    kind = getattr(config, "model_type", None)
    if kind not in LAYOUTS:
        raise UserError(f"compress: a {kind} model cannot be pruned structurally here; the families that can are "
                        f"{sorted(LAYOUTS)}; distil it into a smaller pretrained student instead (`encoderfit distill`)")
    return LAYOUTS[kind]


def _get(module, path: str):
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set(module, path: str, value) -> None:
    *parents, last = path.split(".")
    for part in parents:
        module = getattr(module, part)
    setattr(module, last, value)


def encoder_of(module):
    """The transformers encoder inside a model (a task model's base model, a sentence-transformers module's, a pooled
    wrapper's): the first PreTrainedModel in it whose family has a layout."""
    from transformers import PreTrainedModel

    for sub in module.modules():
        if isinstance(sub, PreTrainedModel):
            base = sub.base_model
            layout_of(base.config)
            return base
    raise UserError("compress: the run's model holds no transformers encoder to prune")


def layers_of(encoder) -> Sequence:
    return _get(encoder, layout_of(encoder.config).layers)


@dataclass
class Shape:
    """An encoder's sizes, as the cost model reads them."""

    layers: int
    hidden: int
    intermediate: int
    glu: bool

    @classmethod
    def of(cls, config) -> "Shape":
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size, layout_of(config).glu)

    def flops(self, length: float, layers: Optional[int] = None, intermediate: Optional[int] = None) -> float:
        """Multiply-adds of the layers for one text of `length` tokens: attention (Q, K, V and output projections,
        scores and the weighted sum) plus the FFN (a GLU's input layer is twice as wide)."""
        layers = self.layers if layers is None else layers
        width = self.intermediate if intermediate is None else intermediate
        attention = 4 * length * self.hidden ** 2 + 2 * length ** 2 * self.hidden
        ffn = (3 if self.glu else 2) * length * self.hidden * width
        return layers * (attention + ffn)


MIN_FFN_SHARE = 0.125  # narrower FFNs than this lose what recovery can bring back


def ffn_step(intermediate: int) -> int:
    """The grid intermediate sizes are planned on: multiples of 64 for real models, finer for tiny ones."""
    return 64 if intermediate >= 1024 else max(1, intermediate // 16)


def plan_for_speedup(shape: Shape, length: float, speedup: float, min_layers: int = 1) -> Dict:
    """The layer/FFN plan reaching `speedup` (the cost model's ratio) that keeps most of the model: of the plans that
    reach it, the one whose smaller kept share (layers or FFN width) is largest, then the one of least cost cut."""
    full = shape.flops(length)
    step = ffn_step(shape.intermediate)
    floor = max(step, int(shape.intermediate * MIN_FFN_SHARE) // step * step)
    best = None
    for layers in range(min_layers, shape.layers + 1):
        widths = [w for w in range(shape.intermediate, floor - 1, -step)] or [shape.intermediate]
        fits = [w for w in widths if full / shape.flops(length, layers, w) >= speedup]
        if not fits:
            continue
        width = fits[0]  # the widest that reaches the target
        score = (min(layers / shape.layers, width / shape.intermediate), shape.flops(length, layers, width))
        if best is None or score > best[0]:
            best = (score, layers, width)
    if best is None:
        most = full / shape.flops(length, min_layers, floor)
        raise UserError(f"compress.target_speedup {speedup:g}: out of reach for this {shape.layers}-layer model; at "
                        f"{length:.0f} tokens a text the most pruning gives is {most:.1f}x ({min_layers} layer(s), "
                        f"intermediate_size {floor}); ask for at most {most:.1f}, or distil into a smaller pretrained student")
    _, layers, width = best
    return {"layers": layers, "intermediate_size": width, "speedup": round(full / shape.flops(length, layers, width), 3)}


def drop_layers(encoder, keep: List[int]) -> None:
    """Keep only the layers `keep` (indices into the current layer list), in order; the config follows (ModernBERT's
    layer_types keep each kept layer's own attention pattern)."""
    install_layers(encoder, list(layers_of(encoder)), getattr(encoder.config, "layer_types", None), keep)


def install_layers(encoder, layers: Sequence, types: Optional[List[str]], keep: List[int]) -> None:
    """The encoder's layer list made of `layers[i]` for i in `keep`, and its config (layer count, layer types) to match."""
    import torch

    _set(encoder, layout_of(encoder.config).layers, torch.nn.ModuleList([layers[i] for i in keep]))
    encoder.config.num_hidden_layers = len(keep)
    if types is not None:
        encoder.config.layer_types = [types[i] for i in keep]


def measured_layer_choice(encoder, drop: int, distance: Callable[[], float]) -> List[Dict]:
    """Drop `drop` layers one at a time, each time the one whose removal moves the model's outputs least
    (`distance()`: the outputs on validation texts against the original model's). Returns each step's choice with
    what every candidate measured (indices into the original layer list). The encoder is left pruned."""
    layout = layout_of(encoder.config)
    original = list(range(encoder.config.num_hidden_layers))
    kept, steps = list(original), []
    full_layers, full_types = list(_get(encoder, layout.layers)), getattr(encoder.config, "layer_types", None)

    def set_kept(indices: List[int]) -> None:
        install_layers(encoder, full_layers, full_types, indices)

    for _ in range(drop):
        candidates = [i for i in kept if not (layout.fixed_first and i == 0)]
        if not candidates:
            raise UserError(f"compress: cannot drop {drop} layers of {len(original)} (the first layer stays)")
        measured = {}
        for i in candidates:
            set_kept([j for j in kept if j != i])
            measured[i] = float(distance())
        chosen = min(measured, key=measured.get)
        kept.remove(chosen)
        steps.append({"dropped": chosen, "distance": round(measured[chosen], 6),
                      "candidates": {str(k): round(v, 6) for k, v in measured.items()}})
        log.info("layer %d dropped: its removal moves the validation outputs least (%.4g; others %s)", chosen,
                 measured[chosen], ", ".join(f"{k}: {v:.3g}" for k, v in sorted(measured.items()) if k != chosen))
    set_kept(kept)
    return steps


def kept_layers(steps: List[Dict], layers: int) -> List[int]:
    dropped = {s["dropped"] for s in steps}
    return [i for i in range(layers) if i not in dropped]


def ffn_importance(encoder, run_inputs: Callable[[], None]) -> List:
    """Each layer's FFN neuron importance: the mean magnitude of the neuron's activation (the input of the FFN's
    output layer) over the tokens `run_inputs()` sends through the model, times the norm of the neuron's output
    weights (what it adds to the residual stream)."""
    import torch

    layout = layout_of(encoder.config)
    sums, counts, hooks = [], [], []
    for layer in _get(encoder, layout.layers):
        out = _get(layer, layout.ffn_out)
        sums.append(torch.zeros(out.in_features, dtype=torch.float64))
        counts.append([0])

        def hook(module, args, i=len(sums) - 1):
            act = args[0].detach().reshape(-1, args[0].shape[-1])
            sums[i] += act.abs().sum(0).to(torch.float64).cpu()
            counts[i][0] += act.shape[0]

        hooks.append(out.register_forward_pre_hook(hook))
    try:
        run_inputs()
    finally:
        for h in hooks:
            h.remove()
    scores = []
    for layer, total, n in zip(_get(encoder, layout.layers), sums, counts):
        weight = _get(layer, layout.ffn_out).weight.detach().to(torch.float64).cpu()
        scores.append(total / max(n[0], 1) * weight.norm(dim=0))
    return scores


def top_neurons(scores, keep: int) -> List:
    """Per layer, the indices of the `keep` most important neurons, in their original order."""
    import torch

    return [torch.sort(torch.topk(s, keep).indices).values for s in scores]


def prune_ffn(encoder, keep: List) -> None:
    """Keep the FFN neurons `keep[i]` in layer i (the same count in every layer: one intermediate_size)."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    layout = layout_of(encoder.config)
    width = encoder.config.intermediate_size
    sizes = {len(k) for k in keep}
    if len(sizes) != 1:
        raise ValueError("prune_ffn: every layer keeps the same number of neurons (one intermediate_size)")
    for layer, idx in zip(_get(encoder, layout.layers), keep):
        idx = torch.as_tensor(idx, dtype=torch.long)
        rows = torch.cat([idx, idx + width]) if layout.glu else idx  # a GLU's input layer: the input half, then the gate
        _set(layer, layout.ffn_in, prune_linear_layer(_get(layer, layout.ffn_in), rows, dim=0))
        _set(layer, layout.ffn_out, prune_linear_layer(_get(layer, layout.ffn_out), idx, dim=1))
    encoder.config.intermediate_size = sizes.pop()


def check_plain(model) -> None:
    """The pruned model is what its config builds: a fresh model of the config takes its weights exactly (no key
    missing or left over, no shape different)."""
    rebuilt = type(model)(model.config)
    state = model.state_dict()
    mine = {k: tuple(v.shape) for k, v in state.items()}
    theirs = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if mine != theirs:
        odd = sorted(set(mine.items()) ^ set(theirs.items()))[:3]
        raise RuntimeError(f"pruned model differs from what its config builds: {odd}")
    rebuilt.load_state_dict(state, strict=True)  # every weight finds its place
