"""Capture of pre-softmax decoder self-attention scores from a real fairseq transformer."""

import copy

import pytest
import torch

from conftest import USER_DIR, build_training, first_batch
from nd_fairseq.models.capture import attention_scores_for


@pytest.fixture(scope="module")
def model_and_batch(data_bin):
    argv = [data_bin / "full", "--user-dir", USER_DIR, "--task", "negative_distillation",
            "--arch", "transformer", "--encoder-layers", "2", "--decoder-layers", "3",
            "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
            "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2", "--decoder-attention-heads", "4",
            "--criterion", "label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3"]
    torch.manual_seed(0)
    _, task, model, _ = build_training(argv)
    model.eval()
    batch = first_batch(task, "valid", max_tokens=400)
    return model, batch, task


def _self_attention_inputs(model, net_input):
    """Each decoder layer's self-attention query input, captured with forward pre-hooks."""
    inputs = []
    hooks = [layer.self_attn.register_forward_pre_hook(
        lambda mod, args, kwargs: inputs.append(kwargs["query"].detach().clone()), with_kwargs=True)
        for layer in model.decoder.layers]
    try:
        with torch.no_grad():
            model(**net_input)
    finally:
        for h in hooks:
            h.remove()
    return inputs


def test_one_score_tensor_per_layer_with_per_head_shape(model_and_batch):
    model, batch, _ = model_and_batch
    prev = batch["net_input"]["prev_output_tokens"]
    bsz, tgt_len = prev.shape
    with torch.no_grad(), attention_scores_for(model).capture() as scores:
        model(**batch["net_input"])
    assert len(scores) == len(model.decoder.layers) == 3
    for s in scores:
        assert s.shape == (bsz * 4, tgt_len, tgt_len)


def test_softmax_of_captured_scores_reproduces_fairseq_head_weights(model_and_batch):
    model, batch, task = model_and_batch
    net_input = batch["net_input"]
    prev = net_input["prev_output_tokens"]
    pad = task.target_dictionary.pad()
    bsz, tgt_len = prev.shape
    real = prev.ne(pad)
    assert (~real).any(), "the batch should contain padding for this test to mean something"
    with torch.no_grad(), attention_scores_for(model).capture() as scores:
        model(**net_input)
    causal = torch.ones(tgt_len, tgt_len, dtype=torch.bool).tril()
    allowed = causal[None] & real[:, None, :]  # B, T(query), T(key)
    layer_inputs = _self_attention_inputs(model, net_input)
    future = torch.triu(torch.full((tgt_len, tgt_len), float("-inf")), 1)
    for layer, x, captured in zip(model.decoder.layers, layer_inputs, scores):
        attn = layer.self_attn
        attn.skip_embed_dim_check = True  # fairseq's per-head path (the fused one averages heads)
        try:
            with torch.no_grad():
                _, weights = attn(query=x, key=x, value=x, key_padding_mask=prev.eq(pad),
                                  attn_mask=future, need_weights=True, need_head_weights=True)
        finally:
            attn.skip_embed_dim_check = False
        heads = weights.shape[0]
        ours = captured.view(bsz, heads, tgt_len, tgt_len)
        ours = ours.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
        theirs = weights.transpose(0, 1)  # H, B, T, T -> B, H, T, T
        rows = real[:, None, :, None].expand_as(ours)  # query positions that are real tokens
        assert torch.allclose(ours[rows], theirs[rows], atol=1e-6)


def test_capture_changes_nothing_in_the_forward_pass(model_and_batch):
    model, batch, _ = model_and_batch
    with torch.no_grad():
        plain, extra_plain = model(**batch["net_input"])
        with attention_scores_for(model).capture():
            captured, extra_captured = model(**batch["net_input"])
    assert torch.allclose(plain, captured, atol=1e-5)
    for a, b in zip(extra_plain["inner_states"], extra_captured["inner_states"]):
        assert torch.allclose(a, b, atol=1e-5)
    # after the block the fused path is back
    assert not any(layer.self_attn.skip_embed_dim_check for layer in model.decoder.layers)


def test_capture_is_inert_outside_the_block_and_off_the_books(model_and_batch):
    model, batch, _ = model_and_batch
    recorder = attention_scores_for(model)
    keys_before = set(model.state_dict())
    with torch.no_grad():
        model(**batch["net_input"])
    assert recorder.scores == [] and not recorder._active
    assert set(model.state_dict()) == keys_before
    assert attention_scores_for(model) is recorder  # attached once
    # a deep copy (as fairseq's EMA makes) records into its own recorder
    clone = copy.deepcopy(model)
    with torch.no_grad(), attention_scores_for(clone).capture() as clone_scores:
        clone(**batch["net_input"])
    assert len(clone_scores) == 3 and not recorder.scores


def test_gradients_flow_through_captured_scores(model_and_batch):
    model, batch, _ = model_and_batch
    model.train()
    try:
        with attention_scores_for(model).capture() as scores:
            model(**batch["net_input"])
        tgt_len = scores[0].shape[-1]
        lower = torch.ones(tgt_len, tgt_len, dtype=torch.bool).tril()
        scores[0][:, lower].sum().backward()
        first = model.decoder.layers[0].self_attn
        assert first.q_proj.weight.grad is not None and first.q_proj.weight.grad.abs().sum() > 0
        assert first.k_proj.weight.grad.abs().sum() > 0
    finally:
        model.zero_grad()
        model.eval()
