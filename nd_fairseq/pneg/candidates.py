"""Candidate sets for the response-selection benchmark (PNEG §3.1).

* training, per negative source S: 1 positive + 5 random + 5 negatives of S (11 candidates);
  for S = random the second five are five more random responses;
* validation (shared by all sources, so model selection is comparable): 1 positive + 5 random +
  5 adversarial (human where the data has them, else one context turn and four random);
* BM25 negatives are the top five retrieved responses; when fewer than five responses share a
  word with the context, the rest are random (marked ``random`` in ``kinds``);
* test: ``random`` = 1 positive + 5 random; ``adversarial`` = 1 positive + 5 human adversarial
  negatives, or, for data without them (plain pairs, PersonaChat in §3.2), one context turn plus
  four random responses (Gupta et al. 2021; Whang et al. 2021).

Negative sources: ``random`` (the data's random negatives, else sampled from the split's
responses), ``bm25`` (:mod:`.retrieval`), ``pneg`` (an ``nd-pneg generate`` results file),
``human`` (DailyDialog++ adversarial negatives). All sources train on the same contexts: those for
which every requested source has five negatives (the paper's 9,259 DailyDialog++ contexts).

Each set is shuffled with a generator seeded by (seed, set, id); ``label`` is the positive's index.
"""

import json
import os
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from ..io_utils import AtomicFiles, InputError, require_file
from .data import Example
from .parse import normalise
from .prompt import N_NEGATIVES
from .retrieval import bm25_negatives

SOURCES = ("random", "bm25", "pneg", "human")
TEST_SETS = ("random", "adversarial")


@dataclass
class CandidateSet:
    id: str
    context: List[str]
    candidates: List[str]
    label: int
    kinds: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, object]:
        return {"id": self.id, "context": self.context, "candidates": self.candidates, "label": self.label,
                "kinds": self.kinds}

    @classmethod
    def from_json(cls, rec: Dict[str, object]) -> "CandidateSet":
        return cls(str(rec["id"]), list(rec["context"]), list(rec["candidates"]), int(rec["label"]),
                   list(rec.get("kinds") or []))


def _rng(seed: int, what: str, example_id: str) -> random.Random:
    return random.Random(f"pneg-candidates\x1f{what}\x1f{seed}\x1f{example_id}")


def assemble(example: Example, parts: Sequence[tuple], seed: int, what: str) -> CandidateSet:
    """Shuffle ``[(kind, [texts])...]`` (the positive first) into one candidate set."""
    items = [(kind, text) for kind, texts in parts for text in texts]
    order = list(range(len(items)))
    _rng(seed, what, example.id).shuffle(order)
    cands = [items[i][1] for i in order]
    kinds = [items[i][0] for i in order]
    return CandidateSet(example.id, list(example.context), cands, kinds.index("positive"), kinds)


class RandomResponses:
    """Random negatives drawn from a response pool, never a copy of the example's positives/context."""

    def __init__(self, responses: Sequence[str], seed: int):
        self.pool = list(dict.fromkeys(r for r in responses if r.strip()))
        self.seed = seed

    def draw(self, example: Example, k: int, what: str, avoid: Sequence[str] = ()) -> List[str]:
        banned = {normalise(t) for t in list(example.positives) + list(example.context) + list(avoid)}
        rng = _rng(self.seed, "random-" + what, example.id)
        out: List[str] = []
        tries = 0
        while len(out) < k and tries < 50 * k + 100:
            tries += 1
            text = self.pool[rng.randrange(len(self.pool))] if self.pool else None
            if text is None:
                break
            key = normalise(text)
            if key and key not in banned:
                banned.add(key)
                out.append(text)
        if len(out) < k:
            raise InputError(f"cannot draw {k} distinct random responses for example {example.id}: the "
                             f"response pool has {len(self.pool)} responses; use more data")
        return out


def data_random(example: Example, sampler: RandomResponses, what: str) -> List[str]:
    """The data's own random negatives when it has five, else five sampled ones."""
    if len(example.random) >= N_NEGATIVES:
        return example.random[:N_NEGATIVES]
    return sampler.draw(example, N_NEGATIVES, what)


def pneg_negatives(records: Dict[str, dict]) -> Dict[str, List[str]]:
    return {i: r["negatives"][:N_NEGATIVES] for i, r in records.items()
            if r.get("status") == "ok" and len(r.get("negatives") or []) >= N_NEGATIVES}


def source_negatives(examples: Sequence[Example], source: str, sampler: RandomResponses,
                     bm25_corpus: Sequence[str] = (), pneg: Optional[Dict[str, List[str]]] = None,
                     bm25_exclude_context: bool = False) -> Dict[str, List[str]]:
    """Five negatives of ``source`` for each example that has them."""
    if source == "human":
        return {ex.id: ex.adversarial[:N_NEGATIVES] for ex in examples if len(ex.adversarial) >= N_NEGATIVES}
    if source == "pneg":
        if pneg is None:
            raise InputError("source 'pneg' needs --pneg RESULTS (the output of nd-pneg generate)")
        return {ex.id: pneg[ex.id] for ex in examples if ex.id in pneg}
    if source == "bm25":
        # fewer than five when few responses share a word with the context: build_training_sets pads
        found = bm25_negatives([ex.context for ex in examples], [ex.positives for ex in examples],
                               bm25_corpus, N_NEGATIVES, bm25_exclude_context)
        return {ex.id: negs for ex, negs in zip(examples, found)}
    if source == "random":
        return {}  # drawn per example in build_training_sets (must avoid the first five)
    raise InputError(f"unknown negative source {source!r}: use {', '.join(SOURCES)}")


def split_responses(examples: Sequence[Example]) -> List[str]:
    return [p for ex in examples for p in ex.positives]


def build_training_sets(examples: Sequence[Example], sources: Sequence[str], seed: int = 1,
                        pneg: Optional[Dict[str, List[str]]] = None, bm25_exclude_context: bool = False,
                        common: bool = True) -> Dict[str, List[CandidateSet]]:
    """11-candidate training sets per source (1 positive + 5 random + 5 of the source)."""
    usable = [ex for ex in examples if ex.context and ex.positives]
    sampler = RandomResponses(split_responses(usable), seed)
    corpus = split_responses(usable)
    negs = {s: source_negatives(usable, s, sampler, corpus, pneg, bm25_exclude_context) for s in sources}
    has = {s: (None if s == "random" else set(negs[s])) for s in sources}
    out: Dict[str, List[CandidateSet]] = {s: [] for s in sources}
    for ex in usable:
        if common and any(h is not None and ex.id not in h for h in has.values()):
            continue
        rand = data_random(ex, sampler, "train")
        for s in sources:
            if has[s] is not None and ex.id not in has[s]:
                continue
            if s == "random":
                second = [("random", sampler.draw(ex, N_NEGATIVES, "train-extra", avoid=rand))]
            else:
                found = negs[s][ex.id]
                second = [(s, found)]
                if len(found) < N_NEGATIVES:  # BM25 with too few lexical matches: top up at random
                    second.append(("random", sampler.draw(ex, N_NEGATIVES - len(found), "train-pad",
                                                          avoid=list(rand) + list(found))))
            out[s].append(assemble(ex, [("positive", ex.positives[:1]), ("random", rand)] + second,
                                   seed, f"train-{s}"))
    return out


def adversarial_negatives(example: Example, sampler: RandomResponses, mode: str, what: str) -> Optional[list]:
    """``[(kind, negatives), ...]`` of the adversarial recipe, or None if the example cannot have it."""
    if mode in ("auto", "human") and len(example.adversarial) >= N_NEGATIVES:
        return [("human", example.adversarial[:N_NEGATIVES])]
    if mode in ("auto", "context"):
        turn = example.context[_rng(sampler.seed, "context-turn-" + what, example.id).randrange(len(example.context))]
        if not normalise(turn) or normalise(turn) in {normalise(p) for p in example.positives}:
            return None
        # draw() bans the context turns, so the four random ones never repeat the copied turn
        return [("context", [turn]), ("random", sampler.draw(example, N_NEGATIVES - 1, what))]
    return None


def build_eval_sets(examples: Sequence[Example], seed: int = 1, adversarial: str = "auto",
                    name: str = "test") -> Dict[str, List[CandidateSet]]:
    """``random`` and ``adversarial`` 6-candidate sets of a held-out split."""
    if adversarial not in ("auto", "human", "context"):
        raise InputError(f"unknown --adversarial-test {adversarial!r}: use auto, human or context")
    usable = [ex for ex in examples if ex.context and ex.positives]
    sampler = RandomResponses(split_responses(usable), seed)
    mode = adversarial
    if mode == "auto":
        mode = "human" if any(len(ex.adversarial) >= N_NEGATIVES for ex in usable) else "context"
    out: Dict[str, List[CandidateSet]] = {"random": [], "adversarial": []}
    for ex in usable:
        out["random"].append(assemble(ex, [("positive", ex.positives[:1]),
                                           ("random", data_random(ex, sampler, name))], seed, f"{name}-random"))
        adv = adversarial_negatives(ex, sampler, mode, name + "-adv")
        if adv is not None:
            out["adversarial"].append(assemble(ex, [("positive", ex.positives[:1])] + adv, seed,
                                               f"{name}-adversarial"))
    return out


def build_valid_set(examples: Sequence[Example], seed: int = 1, adversarial: str = "auto") -> List[CandidateSet]:
    """Shared 11-candidate validation set: 1 positive + 5 random + 5 adversarial."""
    usable = [ex for ex in examples if ex.context and ex.positives]
    sampler = RandomResponses(split_responses(usable), seed)
    mode = adversarial
    if mode == "auto":
        mode = "human" if any(len(ex.adversarial) >= N_NEGATIVES for ex in usable) else "context"
    out = []
    for ex in usable:
        adv = adversarial_negatives(ex, sampler, mode, "valid")
        if adv is None:
            continue
        taken = [t for _, texts in adv for t in texts]
        rand = sampler.draw(ex, N_NEGATIVES, "valid-extra", avoid=taken) if len(ex.random) < N_NEGATIVES \
            else ex.random[:N_NEGATIVES]
        out.append(assemble(ex, [("positive", ex.positives[:1]), ("random", rand)] + adv, seed, "valid"))
    return out


def write_candidates(path: str, sets: Sequence[CandidateSet]) -> None:
    directory, name = os.path.split(os.path.abspath(path))
    with AtomicFiles(directory) as out:
        f = out.open(name)
        for cs in sets:
            f.write(json.dumps(cs.to_json(), ensure_ascii=False) + "\n")


def read_candidates(path: str) -> List[CandidateSet]:
    require_file(path, "candidate file", "write candidate sets with nd-pneg build-candidates")
    out = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                cs = CandidateSet.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{path}: line {no} is not a candidate set (id, context, candidates, label)") from None
            if not 0 <= cs.label < len(cs.candidates):
                raise InputError(f"{path}: line {no} has label {cs.label} outside its {len(cs.candidates)} candidates")
            out.append(cs)
    return out


def candidate_files(directory: str) -> Dict[str, str]:
    """Map of ``train.<source>`` / ``valid`` / ``test.<set>`` to paths present in ``directory``."""
    found = {}
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if name.endswith(".jsonl"):
            found[name[:-len(".jsonl")]] = os.path.join(directory, name)
    return found
