"""Decoding helpers shared by the criteria: greedy decoding as ``fairseq-generate --beam 1`` does it,
and teacher-forced forward passes of given responses (the baselines' and the external-negative
term's negative updates).
"""

import math
from typing import Dict, Optional

import torch
from torch import Tensor

from .io_utils import InputError


@torch.no_grad()
def greedy_decode(model, src_tokens: Tensor, src_lengths: Tensor, max_len: int, eos: int, pad: int) -> Tensor:
    """Greedy responses ``(B, L)``: each row ends with EOS, then padding.

    The choices of ``fairseq-generate --beam 1``: decoding starts from EOS (fairseq's BOS for
    translation), padding is never chosen, EOS is not allowed as the first token (``--min-len 1``)
    and is forced after ``max_len`` tokens. The model runs in eval mode (no dropout) and its mode
    is restored afterwards.
    """
    if max_len < 1:
        raise InputError(f"--decode-max-len {max_len} must be >= 1")
    was_training = model.training
    model.eval()
    try:
        encoder_out = model.encoder(src_tokens, src_lengths=src_lengths)
        bsz = src_tokens.size(0)
        tokens = src_tokens.new_full((bsz, max_len + 2), pad)
        tokens[:, 0] = eos
        finished = torch.zeros(bsz, dtype=torch.bool, device=src_tokens.device)
        incremental_state: Dict[str, Dict[str, Optional[Tensor]]] = {}
        step = 0
        for step in range(max_len + 1):
            logits, _ = model.decoder(tokens[:, :step + 1], encoder_out=encoder_out,
                                      incremental_state=incremental_state)
            logits = logits[:, -1, :].float().clone()  # edited below: never touch the model's tensor
            logits[:, pad] = -math.inf
            if step == 0:
                logits[:, eos] = -math.inf
            if step >= max_len:
                chosen = torch.full_like(finished, eos, dtype=tokens.dtype)
            else:
                chosen = logits.argmax(-1)
            chosen = chosen.masked_fill(finished, pad)
            tokens[:, step + 1] = chosen
            finished |= chosen.eq(eos)
            if bool(finished.all()):
                break
        return tokens[:, 1:step + 2]
    finally:
        model.train(was_training)


def decoder_input_for(responses: Tensor, eos: int, pad: int) -> Tensor:
    """``prev_output_tokens`` for teacher-forcing ``responses`` (EOS-terminated, right-padded):
    shifted right behind EOS, as fairseq's collater builds them."""
    prev = torch.cat([responses.new_full((responses.size(0), 1), eos), responses[:, :-1]], dim=1)
    return prev.masked_fill(responses.eq(pad), pad)


def forward_on(model, sample, rows: Tensor, responses: Tensor, eos: int, pad: int):
    """Teacher-forced forward pass of ``responses`` for the queries ``rows`` of ``sample``."""
    net_input = dict(sample["net_input"])
    net_input["src_tokens"] = net_input["src_tokens"].index_select(0, rows)
    net_input["src_lengths"] = net_input["src_lengths"].index_select(0, rows)
    net_input["prev_output_tokens"] = decoder_input_for(responses, eos, pad)
    return model(**net_input)
