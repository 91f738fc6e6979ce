"""Padding-free encoders (models/packing.py): packed and padded batches give the same outputs, losses and gradients
for every head shape, on tiny random-init ModernBERT and BERT models; unsupported families keep padded batches; a
saved model stays a plain transformers model; `encoderfit train` with packing gives a directory pipeline loads."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import transformers
from transformers import BertConfig, ModernBertConfig

from encoderfit.models import packing
from encoderfit.models.packing import PACKED, batch_tokens, disable_packing, enable_packing, is_packed
from encoderfit.models.pooling import pool

from conftest import run_cli

LENGTHS = [45, 9, 30, 2]  # longer and shorter than ModernBERT's window (local_attention 16: 8 each side)


# initializer_range 0.2 (not 0.02): outputs that differ between rows by ~0.3-1, far above the tolerances
def modernbert(**extra) -> ModernBertConfig:
    return ModernBertConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                            local_attention=16, global_attn_every_n_layers=2, max_position_embeddings=128, pad_token_id=0,
                            bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, initializer_range=0.2, **extra)


def bert(**extra) -> BertConfig:
    return BertConfig(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=128, pad_token_id=0, type_vocab_size=2, initializer_range=0.2, **extra)


def batch(lengths=LENGTHS, pairs: bool = False, seed: int = 0) -> dict:
    """Right-padded random ids; with pairs, token type 1 on each row's second half."""
    g = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    ids = torch.randint(5, 120, (len(lengths), longest), generator=g)
    mask = (torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids[:, 0] = 1
    ids[mask == 0] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if pairs:
        out["token_type_ids"] = ((torch.arange(longest)[None, :] >= torch.tensor(lengths)[:, None] // 2) & mask.bool()).long()
    return out


def build(cls_name: str, config, **head):
    torch.manual_seed(0)
    config.update(head)
    return getattr(transformers, cls_name)(config).eval()


def both(model, inputs: dict, autocast: bool = False, **call):
    """The model's outputs on the padded batch, then on the same batch packed (the model left unpacked after)."""
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(**inputs, **call)

    padded = run()
    assert enable_packing(model, True)
    try:
        packed = run()
    finally:
        disable_packing(model)
    return padded, packed


def real(x, mask):
    """Per-token outputs at the real tokens only (what the heads read; pads differ and are never read)."""
    return x[mask.bool()]


HEADS = [  # (model class, config, head settings, whether the outputs are per token)
    ("ModernBertForSequenceClassification", modernbert, {"num_labels": 3, "classifier_pooling": "cls"}, False),
    ("ModernBertForSequenceClassification", modernbert, {"num_labels": 3, "classifier_pooling": "mean"}, False),
    ("ModernBertForSequenceClassification", modernbert, {"num_labels": 4, "problem_type": "multi_label_classification"}, False),
    ("ModernBertForSequenceClassification", modernbert, {"num_labels": 1, "problem_type": "regression"}, False),
    ("ModernBertForTokenClassification", modernbert, {"num_labels": 5}, True),
    ("BertForSequenceClassification", bert, {"num_labels": 3}, False),  # [CLS] through BERT's pooler
    ("BertForSequenceClassification", bert, {"num_labels": 4, "problem_type": "multi_label_classification"}, False),
    ("BertForSequenceClassification", bert, {"num_labels": 1, "problem_type": "regression"}, False),
    ("BertForTokenClassification", bert, {"num_labels": 5}, True),
]


@pytest.mark.parametrize("cls_name,config,head,per_token", HEADS, ids=[f"{h[0]}-{'-'.join(map(str, h[2].values()))}" for h in HEADS])
def test_packed_logits_equal_padded(cls_name, config, head, per_token):
    model = build(cls_name, config(), **head)
    inputs = batch()
    with torch.no_grad():
        padded, packed = both(model, inputs)
        low_padded, low_packed = both(model, inputs, autocast=True)
    pick = (lambda x: real(x, inputs["attention_mask"])) if per_token else (lambda x: x)
    torch.testing.assert_close(pick(packed.logits), pick(padded.logits), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(pick(low_packed.logits).float(), pick(low_padded.logits).float(), atol=3e-2, rtol=3e-2)
    assert not is_packed(model) and model.config._attn_implementation == "sdpa"


OTHERS = {"Roberta": {}, "XLMRoberta": {}, "Camembert": {}, "Electra": {},  # RoBERTa's positions start at pad + 1
          "DistilBert": {"dim": 32, "hidden_dim": 64, "n_layers": 2, "n_heads": 4}}


@pytest.mark.parametrize("family", sorted(OTHERS))
def test_other_bert_families(family):
    sizes = OTHERS[family] or {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = getattr(transformers, f"{family}Config")(vocab_size=120, max_position_embeddings=130, pad_token_id=0,
                                                        initializer_range=0.2, **sizes)
    model = build(f"{family}ForTokenClassification", config, num_labels=3)
    inputs = batch()
    with torch.no_grad():
        padded, packed = both(model, inputs)
    mask = inputs["attention_mask"]
    torch.testing.assert_close(real(packed.logits, mask), real(padded.logits, mask), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cls_name,config", [("ModernBertForQuestionAnswering", modernbert), ("BertForQuestionAnswering", bert)])
def test_question_answering_spans_and_pairs(cls_name, config):
    model = build(cls_name, config())
    inputs = batch(pairs=config is bert)  # BERT reads question/context token types
    with torch.no_grad():
        padded, packed = both(model, inputs)
    for name in ("start_logits", "end_logits"):
        torch.testing.assert_close(real(getattr(packed, name), inputs["attention_mask"]),
                                   real(getattr(padded, name), inputs["attention_mask"]), atol=2e-5, rtol=1e-4)


def test_token_types_are_packed_along():
    model = build("BertForSequenceClassification", bert(), num_labels=2)
    inputs = batch(pairs=True)
    with torch.no_grad():
        padded, packed = both(model, inputs)
        plain = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    torch.testing.assert_close(packed.logits, padded.logits, atol=2e-5, rtol=1e-4)
    assert (plain - padded.logits).abs().max() > 1e-3  # the token types matter, so they were packed right


@pytest.mark.parametrize("cls_name,config,mode", [("ModernBertModel", modernbert, "mean"), ("BertModel", bert, "mean"),
                                                  ("BertModel", bert, "cls"), ("BertModel", bert, "max")])
def test_sentence_embedding_pooling(cls_name, config, mode):
    encoder = build(cls_name, config())
    inputs = batch()
    with torch.no_grad():
        padded, packed = both(encoder, inputs, output_hidden_states=True)
    mask = inputs["attention_mask"]
    torch.testing.assert_close(pool(packed.last_hidden_state, mask, mode), pool(padded.last_hidden_state, mask, mode), atol=2e-5, rtol=1e-4)
    assert len(packed.hidden_states) == len(padded.hidden_states)
    for a, b in zip(packed.hidden_states, padded.hidden_states):
        torch.testing.assert_close(real(a, mask), real(b, mask), atol=2e-5, rtol=1e-4)
    if config is bert:  # the pooler reads each row's own [CLS]
        torch.testing.assert_close(packed.pooler_output, padded.pooler_output, atol=2e-5, rtol=1e-4)


def test_sentence_transformer_encodes_the_same(tmp_path, tiny_model):
    from sentence_transformers import SentenceTransformer, models

    st = SentenceTransformer(modules=[models.Transformer(str(tiny_model)), models.Pooling(64, "mean")], device="cpu")
    texts = ["recipe bake flavor", "match goal team coach league player score season stadium win referee", "a"]
    padded = st.encode(texts, convert_to_tensor=True)
    assert enable_packing(st)
    np.testing.assert_allclose(st.encode(texts, convert_to_tensor=True).numpy(), padded.numpy(), atol=2e-5)


def test_sliding_window_is_honoured():
    """ModernBERT's local layers see 8 tokens each side: packed equals padded on rows longer than the window, and the
    window matters (the same weights with global attention everywhere give other outputs)."""
    inputs = batch([60, 40, 17])
    model = build("ModernBertForTokenClassification", modernbert(), num_labels=3)
    seen = []
    original = packing.repadded_attention

    def spy(*args, **kwargs):
        seen.append(args[7] if len(args) > 7 else kwargs.get("window"))
        return original(*args, **kwargs)

    packing.repadded_attention = spy
    try:
        with torch.no_grad():
            padded, packed = both(model, inputs)
    finally:
        packing.repadded_attention = original
    assert sorted(set(seen), key=str) == [8, None]  # local layers: |i - j| <= 8; global ones: no window
    mask = inputs["attention_mask"]
    torch.testing.assert_close(real(packed.logits, mask), real(padded.logits, mask), atol=2e-5, rtol=1e-4)
    wide = build("ModernBertForTokenClassification", modernbert(), num_labels=3)
    wide.config.local_attention = 1024
    for layer in wide.model.layers:
        if layer.attn.sliding_window:
            layer.attn.sliding_window = 513
    with torch.no_grad():
        enable_packing(wide)
        unwindowed = wide(**inputs).logits
    assert (real(unwindowed, mask) - real(packed.logits, mask)).abs().max() > 1e-3


@pytest.mark.parametrize("cls_name,config", [("ModernBertForSequenceClassification", modernbert),
                                             ("BertForSequenceClassification", bert)])
def test_loss_and_gradients_equal(cls_name, config):
    inputs = {**batch(), "labels": torch.tensor([0, 2, 1, 1])}
    grads = []
    for packed in (False, True):
        model = build(cls_name, config(), num_labels=3)
        if packed:
            enable_packing(model)
        loss = model(**inputs).loss
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, a), (loss_b, b) = grads
    torch.testing.assert_close(loss_b, loss_a, atol=1e-6, rtol=1e-5)
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-4, msg=name)


def test_no_mask_is_built_for_the_pack(monkeypatch):
    """Attention gets the sequences as cu_seq_lens and no mask: transformers builds no T x T mask for the pack."""
    from transformers import AttentionInterface

    calls = []

    def spy(module, query, key, value, attention_mask, **kwargs):
        calls.append((attention_mask, kwargs["cu_seq_lens_q"].tolist(), kwargs["max_length_q"], query.shape))
        return packing.packed_attention(module, query, key, value, attention_mask, **kwargs)

    model = build("ModernBertForSequenceClassification", modernbert(), num_labels=2)
    enable_packing(model)
    monkeypatch.setitem(AttentionInterface._global_mapping, PACKED, spy)
    with torch.no_grad():
        model(**batch())
    assert len(calls) == 3
    assert all(mask is None for mask, *_ in calls)
    filled = packing.packed_length(86) if torch.device("cpu") == next(model.parameters()).device else 86  # the CPU's filler
    assert calls[0][1] == [0, 45, 54, 84, 86] + ([filled] if filled > 86 else []) and calls[0][2] == 45
    assert calls[0][3][:3] == (1, 4, filled)


def test_counting_real_and_computed_tokens():
    mask = batch()["attention_mask"]
    assert batch_tokens(mask, packed=True) == {"real": 86, "computed": 86, "padding_share": 0.0}
    padded = batch_tokens(mask, packed=False)
    assert padded["computed"] == 4 * 45 and padded["real"] == 86
    assert padded["padding_share"] == pytest.approx(1 - 86 / 180)


def test_unsupported_family_falls_back_with_its_reason(caplog):
    model = transformers.MPNetForSequenceClassification(transformers.MPNetConfig(
        vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, pad_token_id=1)).eval()
    inputs = batch()
    with torch.no_grad():
        before = model(**inputs).logits
    with caplog.at_level(logging.INFO, logger="encoderfit.models.packing"):
        assert enable_packing(model, True) is False
        assert enable_packing(model, "auto") is False
    assert "MPNetModel" in caplog.text and "relative position bias" in caplog.text and "AttentionInterface" in caplog.text
    assert not is_packed(model) and model.config._attn_implementation != PACKED
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, before)


def test_packing_off_and_an_asked_attention_leave_the_model_alone(caplog):
    model = build("BertForSequenceClassification", bert(), num_labels=2)
    assert enable_packing(model, False) is False and not is_packed(model)
    with caplog.at_level(logging.INFO, logger="encoderfit.models.packing"):
        assert enable_packing(model, "auto", explicit_attention="eager") is False
    assert "eager" in caplog.text and not is_packed(model)
    assert enable_packing(model, True, explicit_attention="eager") and is_packed(model)


def test_attention_weights_are_refused_when_packed():
    model = build("BertForSequenceClassification", bert(), num_labels=2)
    enable_packing(model)
    with pytest.raises(ValueError, match="packing false"):
        model(**batch(), output_attentions=True)


def test_saved_model_is_plain_transformers(tmp_path, tiny_model):
    """A packed model saves a config.json without the packed attention; AutoModel and pipeline load it as before and
    agree with the packed model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3).eval()
    assert enable_packing(model)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    saved = (tmp_path / "config.json").read_text()
    assert PACKED not in saved and "attn_implementation" not in saved
    texts = ["recipe bake flavor dinner", "the team won the match today after a long season", "a"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        packed = model(**enc).logits
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert plain.config._attn_implementation == "sdpa" and not is_packed(plain)
    with torch.no_grad():
        torch.testing.assert_close(plain(**enc).logits, packed, atol=2e-5, rtol=1e-4)
    scores = pipeline("text-classification", model=str(tmp_path), top_k=None)(texts)
    expected = torch.softmax(packed, -1)
    for row, probs in zip(scores, expected):
        got = {d["label"]: d["score"] for d in row}
        assert np.allclose([got[f"LABEL_{i}"] for i in range(3)], probs.numpy(), atol=1e-4)


def test_train_with_packing_gives_a_model_pipeline_loads(trained_run):
    """The shared toy run (tiny ModernBERT, train.packing auto) trained packed; its model loads in a plain pipeline,
    which runs it padded, and agrees with the packed Predictor."""
    import yaml
    from transformers import pipeline

    from encoderfit.runs.predictor import Predictor

    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["train"]["packing"] == "auto" and config["resolved"]["packing"] is True
    assert PACKED not in (trained_run / "model" / "config.json").read_text()
    texts = ["recipe bake flavor dinner spice", "match goal team coach", "software chip network code server laptop data"]
    predictor = Predictor.from_pretrained(trained_run)  # packing as the run's config.yaml says
    assert is_packed(predictor.model)
    unpacked = Predictor.from_pretrained(trained_run, packing=False)
    assert not is_packed(unpacked.model)
    np.testing.assert_allclose(predictor.logits(texts), unpacked.logits(texts), atol=1e-5)
    scores = pipeline("text-classification", model=str(trained_run / "model"), top_k=None, function_to_apply="none")(texts)
    plain = np.array([[{d["label"]: d["score"] for d in row}[name] for name in predictor.labels] for row in scores])
    np.testing.assert_allclose(predictor.logits(texts), plain, atol=1e-4)  # the packed predictor, the padded pipeline
    assert json.loads((trained_run / "metrics.json").read_text())["validation"]["accuracy"] > 0.9  # it learned, packed


def test_packing_option_is_checked():
    proc = run_cli("train", "--train.packing", "sometimes", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --train.packing: 'sometimes' is not valid; expected auto or true or false"


def test_varlen_call_binds_on_meta_tensors(monkeypatch):
    """The CUDA path's call to torch's varlen_attn (its arguments, window and output layout), run by torch's fake
    kernel on meta tensors; the numbers are checked on a GPU (below)."""
    if packing.varlen_kernel() is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    monkeypatch.setattr(packing, "kernel_for", lambda *args: "varlen")
    q = torch.empty(1, 4, 86, 16, device="meta", dtype=torch.bfloat16)
    cu = torch.tensor([0, 45, 54, 84, 86], dtype=torch.int32, device="meta")
    out, weights = packing.packed_attention(torch.nn.Module(), q, q, q, None, scaling=0.25, sliding_window=9,
                                            cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=45, max_length_k=45)
    assert out.shape == (1, 86, 4, 16) and out.dtype == torch.bfloat16 and weights is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen kernel runs on CUDA")
@pytest.mark.parametrize("window", [None, 8])
def test_cuda_varlen_equals_the_repadded_reference(window):
    if packing.varlen_kernel() is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    if window is not None and "window_size" not in packing.varlen_kernel()[1]:
        pytest.skip("this torch's varlen_attn has no window_size")
    g = torch.Generator(device="cuda").manual_seed(0)
    lengths = torch.tensor([45, 9, 30, 2], device="cuda", dtype=torch.int32)
    cu = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    q, k, v = (torch.randn(1, 4, int(lengths.sum()), 64, device="cuda", generator=g, dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    assert packing.kernel_for(q, 0.0, window, 0.125) == "varlen"
    sliding = window + 1 if window is not None else None
    fast, _ = packing.packed_attention(torch.nn.Module(), q, k, v, None, scaling=0.125, sliding_window=sliding,
                                       cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=45, max_length_k=45)
    reference = packing.repadded_attention(q.float(), k.float(), v.float(), cu, 45, scaling=0.125, window=window)
    torch.testing.assert_close(fast.float(), reference, atol=2e-2, rtol=2e-2)
    fast.float().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_cpu_packed_rows_take_a_few_lengths_with_little_filler():
    lengths = [packing.packed_length(t) for t in range(1, 20000)]
    assert all(t <= n <= max(t * 1.0625, t + 8) for t, n in zip(range(1, 20000), lengths))
    assert len(set(lengths)) < 200  # 16 per doubling, not one per batch
    mask = torch.ones(3, 40, dtype=torch.long)
    mask[0, 25:] = 0
    packer = packing.Packer(mask)  # 105 real tokens, filled to 112 (steps of at least 8) by a filler sequence never read back
    assert (packer.total, packer.extra) == (105, 7) and packer.cu_seqlens.tolist() == [0, 25, 65, 105, 112]
    ids = torch.arange(120).view(3, 40)
    assert torch.equal(packer.scatter(packer.gather(ids).unsqueeze(-1)).squeeze(-1), ids * mask)
