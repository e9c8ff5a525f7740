"""Capture the decoder's pre-softmax self-attention scores without forking fairseq's model code.

fairseq's decoder returns each layer's output (``extra["inner_states"]``) but never the decoder
self-attention scores: training runs ``F.multi_head_attention_forward`` (no scores exposed), and the
weights it can return are post-softmax and head-averaged. ``MultiheadAttention`` has its own
per-head computation path, though, and in it the scaled scores ``QKᵀ/√d_k`` pass through the
``apply_sparse_mask`` extension point (meant for sparse-attention subclasses) right after the
``bmm`` and before any mask is added. We route that method, per instance, through a recorder.

While a capture is active, the captured modules are switched to that path (the same flag fairseq
itself sets to skip its fused path). Nothing is recomputed: the recorded tensor is the one the
attention goes on to use, and gradients flow through it into the student.

Recorded tensors are ``(batch * heads, tgt_len, src_len)``. fairseq adds the causal mask to them
in place after recording (``-inf`` above the diagonal), so only positions ``j <= i`` are
meaningful; padding is masked later, out of place, and must be excluded by the caller.
"""

import contextlib
from typing import Iterator, List

from torch import Tensor, nn


class SelfAttentionScores:
    """Records the self-attention scores of every decoder layer of one model, when asked to."""

    def __init__(self, decoder: nn.Module):
        layers = getattr(decoder, "layers", None)
        if layers is None or not len(layers):
            raise ValueError("the decoder has no .layers; attention capture needs a fairseq "
                             "TransformerDecoder (or a decoder with the same layer structure)")
        self.attentions = [layer.self_attn for layer in layers]
        self.scores: List[Tensor] = []
        self._active = False
        for attn in self.attentions:
            self._attach(attn)

    def _attach(self, attn: nn.Module) -> None:
        if not hasattr(attn, "apply_sparse_mask"):
            raise ValueError(f"{type(attn).__name__} has no apply_sparse_mask; it is not a fairseq "
                             f"MultiheadAttention")
        # an instance attribute: not a parameter or buffer, so never in a state dict
        attn.apply_sparse_mask = _RecordingSparseMask(self, attn.apply_sparse_mask)

    @contextlib.contextmanager
    def capture(self) -> Iterator[List[Tensor]]:
        """Within the block, forward passes append one score tensor per decoder layer."""
        saved = [attn.skip_embed_dim_check for attn in self.attentions]
        for attn in self.attentions:
            attn.skip_embed_dim_check = True  # take MultiheadAttention's own per-head path
        self.scores = []
        self._active = True
        try:
            yield self.scores
        finally:
            self._active = False
            self.scores = []  # the caller keeps the yielded list; the recorder holds no tensors
            for attn, flag in zip(self.attentions, saved):
                attn.skip_embed_dim_check = flag


class _RecordingSparseMask:
    """Stands in for ``MultiheadAttention.apply_sparse_mask``: records, then defers to the original.

    A callable object rather than a closure so that ``copy.deepcopy`` of a model (EMA does this)
    yields a copy that records into the copied recorder, not the original one.
    """

    def __init__(self, recorder: SelfAttentionScores, original):
        self.recorder = recorder
        self.original = original

    def __call__(self, attn_weights: Tensor, tgt_len: int, src_len: int, bsz: int) -> Tensor:
        if self.recorder._active:
            self.recorder.scores.append(attn_weights)
        return self.original(attn_weights, tgt_len, src_len, bsz)


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder of a fairseq encoder-decoder model (unwrapping DDP-style ``.module``)."""
    while not hasattr(model, "decoder") and hasattr(model, "module"):
        model = model.module
    if not hasattr(model, "decoder"):
        raise ValueError(f"{type(model).__name__} has no decoder; negative distillation needs an "
                         f"encoder-decoder model such as fairseq's transformer")
    return model.decoder


def attention_scores_for(model: nn.Module) -> SelfAttentionScores:
    """The (cached) recorder attached to ``model``'s decoder."""
    decoder = decoder_of(model)
    recorder = decoder.__dict__.get("_nd_attention_scores")
    if recorder is None:
        recorder = SelfAttentionScores(decoder)
        # stored in __dict__ directly: nn.Module.__setattr__ would not register it anyway, but
        # this keeps it out of named_children and state_dict beyond doubt
        decoder.__dict__["_nd_attention_scores"] = recorder
    return recorder
