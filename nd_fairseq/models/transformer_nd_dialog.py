"""Transformer architectures for single-turn dialogue, as named fairseq ``--arch`` presets.

``transformer_nd_dialog`` is the paper's model (§3.2, following Csáky et al. 2019): 6 encoder and
6 decoder layers, d_model 512, 8 heads (64 dims each), FFN 2048, dropout 0.1 on attention,
activations and the residual stream (Appendix A). Queries and responses share one dictionary, so
input and output embeddings of the decoder are tied.

The smaller presets keep the same shape at CPU scale; they are stock fairseq ``transformer``
models with other sizes, and checkpoints load with plain fairseq (``--arch`` is only a preset).
"""

from fairseq.models import register_model_architecture
from fairseq.models.transformer.transformer_legacy import base_architecture


def _defaults(args, layers: int, dim: int, heads: int, ffn: int, dropout: float) -> None:
    for side in ("encoder", "decoder"):
        setattr(args, f"{side}_layers", getattr(args, f"{side}_layers", layers))
        setattr(args, f"{side}_embed_dim", getattr(args, f"{side}_embed_dim", dim))
        setattr(args, f"{side}_attention_heads", getattr(args, f"{side}_attention_heads", heads))
        setattr(args, f"{side}_ffn_embed_dim", getattr(args, f"{side}_ffn_embed_dim", ffn))
    args.dropout = getattr(args, "dropout", dropout)
    args.attention_dropout = getattr(args, "attention_dropout", dropout)
    args.activation_dropout = getattr(args, "activation_dropout", dropout)
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", True)
    base_architecture(args)


@register_model_architecture("transformer", "transformer_nd_dialog")
def transformer_nd_dialog(args):
    """The paper's setting: 6+6 layers, 512, 8 heads, FFN 2048, dropout 0.1."""
    _defaults(args, layers=6, dim=512, heads=8, ffn=2048, dropout=0.1)


@register_model_architecture("transformer", "transformer_nd_dialog_small")
def transformer_nd_dialog_small(args):
    """CPU scale (the README's pipeline and the chitchat experiments): 2+2 layers, 128, 4 heads,
    FFN 512, dropout 0.1."""
    _defaults(args, layers=2, dim=128, heads=4, ffn=512, dropout=0.1)


@register_model_architecture("transformer", "transformer_nd_dialog_tiny")
def transformer_nd_dialog_tiny(args):
    """Tests and smoke runs: 2+2 layers, 64, 4 heads, FFN 128."""
    _defaults(args, layers=2, dim=64, heads=4, ffn=128, dropout=0.1)
