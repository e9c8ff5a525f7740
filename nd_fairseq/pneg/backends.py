"""Generator backends behind one interface: ``complete(prompt, n, seed) -> [n completions]``.

* :class:`OpenAICompletionsBackend`: any OpenAI-compatible ``POST {base_url}/completions``
  endpoint (OpenAI, vLLM, llama.cpp's server, TGI's OpenAI route, ...), standard library only.
  PNEG's sampling (Appendix A): temperature 0.8, frequency and presence penalty 0.4, stop ``###``.
* :class:`FairseqLMBackend`: a local fairseq ``language_modeling`` checkpoint, sampled with the
  same temperature, penalties and stop sequence. Prompt lines are fed as fairseq's line stream
  (each line ends with ``</s>``), and a sampled ``</s>`` is a newline.

Errors: :class:`BackendFatal` stops a run (bad URL, key or model: every request would fail);
:class:`RequestRejected` concerns one prompt (e.g. longer than the model's context) and is
recorded as that example's failure; :class:`BackendUnavailable` means the retries ran out on
transient errors (HTTP 429/5xx, time-outs, malformed answers) and also stops the run, which
resumes where it stopped when started again.
"""

import argparse
import http.client
import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

from ..io_utils import InputError
from .prompt import SEPARATOR


class BackendError(InputError):
    """A generator backend failed."""


class BackendFatal(BackendError):
    """Every request would fail the same way (configuration): stop the run."""


class BackendUnavailable(BackendError):
    """Transient errors persisted through all retries: stop the run (rerun to resume)."""


class RequestRejected(BackendError):
    """The server refused this one request (e.g. prompt too long): record the example as failed."""


@dataclass
class SamplingConfig:
    """PNEG's decoding settings (Appendix A)."""

    temperature: float = 0.8
    frequency_penalty: float = 0.4
    presence_penalty: float = 0.4
    max_tokens: int = 256
    top_p: Optional[float] = None  # None: the server's default (1.0 for OpenAI), as in the paper


class Backend:
    """Interface of a generator."""

    name = "backend"
    max_concurrency = 1

    def complete(self, prompt: str, n: int = 1, stop: Sequence[str] = (SEPARATOR,),
                 seed: Optional[int] = None) -> List[str]:
        raise NotImplementedError

    def describe(self) -> Dict[str, object]:
        return {"backend": self.name}

    def close(self) -> None:
        pass


# OpenAI-compatible completions ---------------------------------------------------------------------

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529}
REJECT_STATUS = {400, 413, 422}  # this prompt: too long, bad characters, ...


class _Transient(Exception):
    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


def completions_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base if base.endswith("/completions") else base + "/completions"


def _retry_after(headers) -> Optional[float]:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _server_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        err = json.loads(text).get("error")
        if isinstance(err, dict):
            text = str(err.get("message") or err)
        elif err:
            text = str(err)
    except (ValueError, AttributeError):
        pass
    text = " ".join(text.split())
    return text[:200] + ("..." if len(text) > 200 else "")


class OpenAICompletionsBackend(Backend):
    """``POST {base_url}/completions`` with retries and exponential back-off.

    Back-off before retry r (0-based) is ``min(backoff_max, backoff_base * 2**r)`` times a jitter
    in [0.5, 1], or the server's ``Retry-After`` when it sends one (capped at ``backoff_max``).
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: Optional[str] = None,
                 sampling: Optional[SamplingConfig] = None, timeout: float = 60.0, max_retries: int = 6,
                 backoff_base: float = 1.0, backoff_max: float = 60.0, concurrency: int = 4,
                 send_seed: bool = False, extra_body: Optional[Dict[str, object]] = None,
                 sleep: Callable[[float], None] = time.sleep):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise InputError(f"--base-url {base_url!r} is not an http(s) URL; give e.g. "
                             f"https://api.openai.com/v1 or http://localhost:8000/v1")
        if not model:
            raise InputError("--model is required for the openai backend (the served model's name)")
        self.url = completions_url(base_url)
        self.model = model
        self.api_key = api_key
        self.sampling = sampling or SamplingConfig()
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_concurrency = max(1, concurrency)
        self.send_seed = send_seed
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        self._jitter = random.Random()

    def describe(self) -> Dict[str, object]:
        return {"backend": self.name, "url": self.url, "model": self.model, **asdict(self.sampling)}

    def request_body(self, prompt: str, n: int, stop: Sequence[str], seed: Optional[int]) -> Dict[str, object]:
        s = self.sampling
        body: Dict[str, object] = {
            "model": self.model, "prompt": prompt, "max_tokens": s.max_tokens,
            "temperature": s.temperature, "frequency_penalty": s.frequency_penalty,
            "presence_penalty": s.presence_penalty, "stop": list(stop), "n": n,
        }
        if s.top_p is not None:
            body["top_p"] = s.top_p
        if self.send_seed and seed is not None:
            body["seed"] = seed
        body.update(self.extra_body)
        return body

    def _post(self, body: Dict[str, object]) -> List[str]:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            message = _server_message(err.read() or b"")
            status = err.code
            if status in RETRY_STATUS:
                raise _Transient(f"HTTP {status}: {message}", _retry_after(err.headers)) from None
            if status in REJECT_STATUS:
                raise RequestRejected(f"{self.url} rejected the request (HTTP {status}): {message}") from None
            hint = {401: "set the API key variable named by --api-key-env",
                    403: "check the API key's permissions",
                    404: "check --base-url (it should end in /v1) and --model"}.get(status, "check the server")
            raise BackendFatal(f"{self.url} answered HTTP {status} ({message}); {hint}") from None
        except (socket.timeout, TimeoutError):
            raise _Transient(f"no answer within {self.timeout:g} s") from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, (socket.timeout, TimeoutError)):
                raise _Transient(f"no answer within {self.timeout:g} s") from None
            raise _Transient(f"cannot reach the server ({err.reason})") from None
        except (http.client.HTTPException, ConnectionError, OSError) as err:
            raise _Transient(f"connection failed ({type(err).__name__}: {err})") from None
        try:
            payload = json.loads(raw.decode("utf-8"))
            choices = payload["choices"]
            ordered = sorted(choices, key=lambda c: c.get("index", 0)) if isinstance(choices, list) else None
            texts = [c["text"] for c in ordered] if ordered else None
        except (ValueError, KeyError, TypeError, AttributeError):
            texts = None
        if not texts or not all(isinstance(t, str) for t in texts):
            snippet = raw[:120].decode("utf-8", "replace")
            raise _Transient(f"malformed answer (no choices[].text): {snippet!r}")
        return texts

    def _post_with_retries(self, body: Dict[str, object]) -> List[str]:
        last: Optional[_Transient] = None
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(body)
            except _Transient as err:
                last = err
                if attempt == self.max_retries:
                    break
                delay = min(self.backoff_max, self.backoff_base * (2 ** attempt)) * (0.5 + 0.5 * self._jitter.random())
                if err.retry_after is not None:
                    delay = min(self.backoff_max, err.retry_after)
                self._sleep(delay)
        raise BackendUnavailable(f"{self.url}: no valid answer after {self.max_retries + 1} tries (last: {last}); "
                                 f"check the server, then rerun the same command to resume")

    def complete(self, prompt: str, n: int = 1, stop: Sequence[str] = (SEPARATOR,),
                 seed: Optional[int] = None) -> List[str]:
        texts: List[str] = []
        # servers that ignore "n" (llama.cpp) answer one choice: ask again for the rest
        while len(texts) < n:
            got = self._post_with_retries(self.request_body(prompt, n - len(texts), stop,
                                                            None if seed is None else seed + len(texts)))
            texts.extend(got[: n - len(texts)])
        return texts


def add_client_options(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """The options of :class:`OpenAICompletionsBackend`'s server and retries, as ``nd-pneg generate``
    and ``nd-humaneval judge`` both take them (``required``: --base-url and --model)."""
    parser.add_argument("--base-url", required=required, default=None,
                        help="e.g. https://api.openai.com/v1 or http://localhost:8000/v1")
    parser.add_argument("--model", required=required, default=None, help="model name the server expects")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="environment variable holding the API key (default OPENAI_API_KEY; unset = no key)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at most (default 4)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for an answer (default 60)")
    parser.add_argument("--retries", type=int, default=6, help="retries of a failed request (default 6)")
    parser.add_argument("--backoff", type=float, default=1.0, help="first back-off in seconds, doubled each retry")
    parser.add_argument("--backoff-max", type=float, default=60.0, help="longest back-off in seconds")


def client_from_args(args: argparse.Namespace, sampling: SamplingConfig, **options) -> OpenAICompletionsBackend:
    """An :class:`OpenAICompletionsBackend` from the options of :func:`add_client_options`; the key
    is read from the environment variable ``--api-key-env`` names (unset or empty: no key)."""
    return OpenAICompletionsBackend(
        args.base_url, args.model, api_key=os.environ.get(args.api_key_env) or None, sampling=sampling,
        timeout=args.timeout, max_retries=args.retries, backoff_base=args.backoff, backoff_max=args.backoff_max,
        concurrency=args.concurrency, **options)


# Local fairseq language model ----------------------------------------------------------------------


class FairseqLMBackend(Backend):
    """Sample from a fairseq ``language_modeling`` checkpoint (loaded with ``checkpoint_utils``).

    ``tokenizer`` (``none``/``moses``) and ``sentencepiece_model`` must match the model's training
    text (e.g. nd-prepare's Moses-tokenised, lowercased text, or nd-spm pieces). Without an
    incremental cache each step re-reads the (left-truncated) context: fine for the small models
    this backend is meant for; serve large models with vLLM or llama.cpp and use the openai backend.
    """

    name = "fairseq-lm"
    max_concurrency = 1

    def __init__(self, checkpoint: str, data: Optional[str] = None, sampling: Optional[SamplingConfig] = None,
                 tokenizer: str = "none", lowercase: bool = False, sentencepiece_model: Optional[str] = None,
                 device: str = "cpu"):
        from ..io_utils import require_file

        require_file(checkpoint, "language-model checkpoint", "give a checkpoint written by fairseq-train "
                                                              "--task language_modeling")
        if tokenizer not in ("none", "moses"):
            raise InputError(f"unknown --lm-tokenizer {tokenizer!r}: use none or moses")
        import torch
        import fairseq  # noqa: F401  (before nd_fairseq.register)
        from fairseq import checkpoint_utils

        import nd_fairseq

        nd_fairseq.register()  # safe (weights_only) checkpoint loading
        overrides = {"data": data} if data else None
        try:
            models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(  # read with weights_only=True
                [checkpoint], arg_overrides=overrides,
                state=nd_fairseq.compat.safe_load.load_checkpoint_to_cpu(checkpoint, overrides, what="language-model checkpoint"))
        except FileNotFoundError as err:
            raise InputError(f"cannot load {checkpoint}: {err}; give the model's data directory "
                             f"(with dict.txt) with --lm-data") from None
        self.torch = torch
        self.model = models[0].to(device).eval()
        self.device = device
        self.dictionary = task.target_dictionary
        self.checkpoint = checkpoint
        self.sampling = sampling or SamplingConfig()
        self.lowercase = lowercase
        self.max_positions = self._max_positions()
        self._moses = self._detok = None
        if tokenizer == "moses":
            from sacremoses import MosesDetokenizer, MosesTokenizer

            self._moses, self._detok = MosesTokenizer(lang="en"), MosesDetokenizer(lang="en")
        self._spm = None
        if sentencepiece_model:
            import sentencepiece as spm

            require_file(sentencepiece_model, "sentencepiece model")
            self._spm = spm.SentencePieceProcessor(model_file=sentencepiece_model)

    def _max_positions(self) -> int:
        mp = self.model.max_positions()
        if isinstance(mp, tuple):
            mp = mp[0]
        return int(mp) if mp else 1024

    def describe(self) -> Dict[str, object]:
        return {"backend": self.name, "checkpoint": self.checkpoint, **asdict(self.sampling)}

    # text <-> ids
    def _encode_line(self, line: str, eos: bool) -> List[int]:
        text = line.lower() if self.lowercase else line
        if self._moses is not None:
            text = self._moses.tokenize(text, escape=False, return_str=True)
        if self._spm is not None:
            text = " ".join(self._spm.encode(text, out_type=str))
        ids = self.dictionary.encode_line(text, add_if_not_exist=False, append_eos=eos).tolist()
        return [int(i) for i in ids]

    def _decode_line(self, ids: Sequence[int]) -> str:
        text = self.dictionary.string(self.torch.tensor(list(ids), dtype=self.torch.long))
        if self._spm is not None:
            text = self._spm.decode(text.split())
        if self._detok is not None:
            text = self._detok.detokenize(text.split())
        return text

    def encode_prompt(self, prompt: str) -> List[int]:
        """``</s>`` line1 ``</s>`` line2 ... last line (open: the model continues it)."""
        lines = prompt.split("\n")
        ids = [self.dictionary.eos()]
        for i, line in enumerate(lines):
            ids += self._encode_line(line, eos=i < len(lines) - 1)
        return ids

    def _sample_one(self, prompt_ids: List[int], stop: Sequence[str], generator) -> str:
        torch = self.torch
        s = self.sampling
        d = self.dictionary
        tokens = list(prompt_ids)
        counts = torch.zeros(len(d), dtype=torch.float32)
        banned = [d.pad(), d.bos()] + ([d.unk()] if d.unk() != d.pad() else [])
        lines: List[List[int]] = [[]]
        for _ in range(s.max_tokens):
            window = tokens[-(self.max_positions - 1):]
            with torch.no_grad():
                logits = self.model(torch.tensor([window], dtype=torch.long, device=self.device))[0][0, -1]
            logits = logits.float().cpu()
            # OpenAI's definition: subtract count * frequency + [count > 0] * presence
            logits = logits - counts * s.frequency_penalty - (counts > 0).float() * s.presence_penalty
            logits[banned] = float("-inf")
            if s.temperature <= 0:
                tok = int(logits.argmax())
            else:
                probs = torch.softmax(logits / s.temperature, dim=-1)
                if s.top_p is not None and s.top_p < 1.0:
                    sorted_p, order = probs.sort(descending=True)
                    keep = sorted_p.cumsum(0) - sorted_p < s.top_p
                    probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
                tok = int(torch.multinomial(probs, 1, generator=generator))
            tokens.append(tok)
            counts[tok] += 1
            if tok == d.eos():  # end of a line
                if "\n" in stop:
                    break
                lines.append([])
            else:
                lines[-1].append(tok)
                current = self._decode_line(lines[-1])
                if any(st in current for st in stop if st != "\n"):
                    break
        text_lines = [self._decode_line(ln) for ln in lines]
        text = "\n".join(text_lines)
        for st in stop:
            text = text.split(st, 1)[0]
        return (" " + text) if text and not text.startswith(" ") else text

    def complete(self, prompt: str, n: int = 1, stop: Sequence[str] = (SEPARATOR,),
                 seed: Optional[int] = None) -> List[str]:
        generator = self.torch.Generator()
        generator.manual_seed(0 if seed is None else int(seed) % (2 ** 63))
        prompt_ids = self.encode_prompt(prompt)
        return [self._sample_one(prompt_ids, stop, generator) for _ in range(n)]
