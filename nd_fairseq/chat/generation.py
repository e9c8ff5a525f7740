"""Decoding keywords of ``DialogueModel.reply`` and ``nd-chat`` -> fairseq generation options
(no fairseq import: nd-chat checks its options before loading fairseq and torch)."""

from typing import Dict, Optional

from ..io_utils import InputError


def generation_options(beam: int = 1, sampling: bool = False, top_k: Optional[int] = None,
                       top_p: Optional[float] = None, temperature: float = 1.0, no_repeat_ngram_size: int = 0,
                       max_len: Optional[int] = None, min_len: Optional[int] = None,
                       lenpen: Optional[float] = None) -> Dict[str, object]:
    """Keyword arguments of ``GeneratorHubInterface.generate`` (fairseq generation options)."""
    if int(beam) < 1:
        raise InputError(f"beam {beam} must be >= 1 (1 = greedy)")
    if temperature is None or not temperature > 0:
        raise InputError(f"temperature {temperature} must be > 0")
    if top_k is not None and int(top_k) < 1:
        raise InputError(f"top_k {top_k} must be >= 1")
    if top_p is not None and not 0 < float(top_p) <= 1:
        raise InputError(f"top_p {top_p} must lie in (0, 1]")
    if max_len is not None and int(max_len) < 1:
        raise InputError(f"max_len {max_len} must be >= 1")
    if int(no_repeat_ngram_size) < 0:
        raise InputError(f"no_repeat_ngram_size {no_repeat_ngram_size} must be >= 0")
    options: Dict[str, object] = {"beam": int(beam), "temperature": float(temperature),
                                  "no_repeat_ngram_size": int(no_repeat_ngram_size)}
    if sampling:
        options.update(sampling=True, sampling_topk=int(top_k) if top_k else -1,
                       sampling_topp=float(top_p) if top_p else -1.0)
    if max_len is not None:
        options.update(max_len_a=0, max_len_b=int(max_len))
    if min_len is not None:
        options["min_len"] = int(min_len)
    if lenpen is not None:
        options["lenpen"] = float(lenpen)
    return options
