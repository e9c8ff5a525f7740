"""Candidate sets for the response-selection benchmark (PNEG §3.1).

* training, per negative source S: 1 positive + 5 random + 5 negatives of S (11 candidates);
  for S = random the second five are five more random responses;
* validation, per source (``--valid-protocol source``, the default): the training recipe of S on
  the validation contexts, so each ranker's best checkpoint is chosen on negatives its own source
  could have produced (a random-negative ranker never sees a human negative before testing); or
  (``random``) 1 positive + 10 random for every source, the negatives any training protocol has;
* BM25 negatives are the top five retrieved responses; when fewer than five responses share a
  word with the context, the rest are random (marked ``random`` in ``kinds``);
* test: ``random`` = 1 positive + 5 random; ``adversarial`` = 1 positive + 5 human adversarial
  negatives, or, for data without them (plain pairs, PersonaChat in §3.2), one context turn plus
  four random responses (Gupta et al. 2021; Whang et al. 2021).

The positive: DailyDialog++ has five per context and PNEG uses one, without saying which. The
first is not a neutral choice: in DailyDialog++ it is the shortest on average, which hands a
length shortcut to any scorer. The default (``positive="random"``) draws one of the positives
per context, seeded by (seed, split, id), so every positive is equally likely, the chosen
positives' length distribution is that of all positives, the number of candidate sets stays the
number of contexts the paper reports, and every source and both test sets of a context share the
same positive. ``positive="first"`` keeps the older behaviour for comparison.

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
from typing import Dict, List, Optional, Sequence, Tuple

from ..io_utils import AtomicFiles, InputError, require_file
from .data import Example
from .parse import normalise
from .prompt import N_NEGATIVES
from .retrieval import bm25_negatives

SOURCES = ("random", "bm25", "pneg", "human")
TEST_SETS = ("random", "adversarial")
POSITIVE_CHOICES = ("random", "first")
VALID_PROTOCOLS = ("source", "random")


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


def choose_positive(example: Example, seed: int, split: str, mode: str = "random") -> str:
    """The one positive of ``example`` in the candidate sets of ``split`` (see the module notes)."""
    if mode == "first" or len(example.positives) == 1:
        return example.positives[0]
    if mode != "random":
        raise InputError(f"unknown --positive {mode!r}: use {' or '.join(POSITIVE_CHOICES)}")
    return example.positives[_rng(seed, "positive-" + split, example.id).randrange(len(example.positives))]


def covered(example: Example, sources: Sequence[str], pneg: Optional[Dict[str, List[str]]]) -> bool:
    """Whether every source can give ``example`` five negatives (BM25 and random always can)."""
    if not (example.context and example.positives):
        return False
    if "human" in sources and len(example.adversarial) < N_NEGATIVES:
        return False
    return not ("pneg" in sources and (pneg is None or example.id not in pneg))


def build_training_sets(examples: Sequence[Example], sources: Sequence[str], seed: int = 1,
                        pneg: Optional[Dict[str, List[str]]] = None, bm25_exclude_context: bool = False,
                        common: bool = True, split: str = "train",
                        positive: str = "random") -> Dict[str, List[CandidateSet]]:
    """11-candidate sets per source (1 positive + 5 random + 5 of the source) of one split.

    ``split`` names the split in the seeds: the validation sets of ``--valid-protocol source`` are
    built by this recipe on the validation contexts (BM25 then retrieves from that split).
    """
    usable = [ex for ex in examples if ex.context and ex.positives]
    sampler = RandomResponses(split_responses(usable), seed)
    corpus = split_responses(usable)
    negs = {s: source_negatives(usable, s, sampler, corpus, pneg, bm25_exclude_context) for s in sources}
    has = {s: (None if s == "random" else set(negs[s])) for s in sources}
    out: Dict[str, List[CandidateSet]] = {s: [] for s in sources}
    for ex in usable:
        if common and any(h is not None and ex.id not in h for h in has.values()):
            continue
        rand = data_random(ex, sampler, split)
        pos = [("positive", [choose_positive(ex, seed, split, positive)])]
        for s in sources:
            if has[s] is not None and ex.id not in has[s]:
                continue
            if s == "random":
                second = [("random", sampler.draw(ex, N_NEGATIVES, split + "-extra", avoid=rand))]
            else:
                found = negs[s][ex.id]
                second = [(s, found)]
                if len(found) < N_NEGATIVES:  # BM25 with too few lexical matches: top up at random
                    second.append(("random", sampler.draw(ex, N_NEGATIVES - len(found), split + "-pad",
                                                          avoid=list(rand) + list(found))))
            out[s].append(assemble(ex, pos + [("random", rand)] + second, seed, f"{split}-{s}"))
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
                    name: str = "test", positive: str = "random") -> Dict[str, List[CandidateSet]]:
    """``random`` and ``adversarial`` 6-candidate sets of a held-out split (one positive for both)."""
    if adversarial not in ("auto", "human", "context"):
        raise InputError(f"unknown --adversarial-test {adversarial!r}: use auto, human or context")
    usable = [ex for ex in examples if ex.context and ex.positives]
    sampler = RandomResponses(split_responses(usable), seed)
    mode = adversarial
    if mode == "auto":
        mode = "human" if any(len(ex.adversarial) >= N_NEGATIVES for ex in usable) else "context"
    out: Dict[str, List[CandidateSet]] = {"random": [], "adversarial": []}
    for ex in usable:
        pos = [("positive", [choose_positive(ex, seed, name, positive)])]
        out["random"].append(assemble(ex, pos + [("random", data_random(ex, sampler, name))], seed, f"{name}-random"))
        adv = adversarial_negatives(ex, sampler, mode, name + "-adv")
        if adv is not None:
            out["adversarial"].append(assemble(ex, pos + adv, seed, f"{name}-adversarial"))
    return out


def build_valid_sets(examples: Sequence[Example], sources: Sequence[str], seed: int = 1,
                     protocol: str = "source", pneg: Optional[Dict[str, List[str]]] = None,
                     bm25_exclude_context: bool = False, common: bool = True,
                     positive: str = "random") -> Dict[str, List[CandidateSet]]:
    """The 11-candidate validation sets of each source under ``protocol`` (see the module notes)."""
    if protocol == "source":
        return build_training_sets(examples, sources, seed, pneg, bm25_exclude_context, common, "valid", positive)
    if protocol == "random":
        shared = build_training_sets(examples, ["random"], seed, split="valid", positive=positive)["random"]
        return {s: shared for s in sources}
    raise InputError(f"unknown --valid-protocol {protocol!r}: use {' or '.join(VALID_PROTOCOLS)}")


def context_key(example: Example) -> tuple:
    return tuple(normalise(t) for t in example.context)


def carve_validation(examples: Sequence[Example], fraction: float, seed: int,
                     eligible=None) -> Tuple[List[Example], List[Example]]:
    """Split ``examples`` into (train, valid): about ``fraction`` of the eligible contexts, seeded.

    The unit is the context: records with the same context turns go to the same side, so no
    validation context is also trained on. Only ``eligible`` examples (default: all) are drawn
    for validation, so that the carved contexts are ones the training sets would have used.
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"--valid-fraction must be between 0 and 1 (exclusive), got {fraction:g}")
    groups: Dict[tuple, List[int]] = {}
    for i, ex in enumerate(examples):
        if eligible is None or eligible(ex):
            groups.setdefault(context_key(ex), []).append(i)
    keys = sorted(groups)
    random.Random(f"pneg-valid-split\x1f{seed}").shuffle(keys)
    target = round(fraction * sum(len(g) for g in groups.values()))
    taken: set = set()
    for key in keys:
        if len(taken) >= max(1, target):
            break
        taken.update(groups[key])
    chosen = {context_key(examples[i]) for i in taken}
    # a record left out of the draw (not eligible) but sharing a chosen context leaves training too
    valid = [ex for i, ex in enumerate(examples) if i in taken]
    train = [ex for i, ex in enumerate(examples) if i not in taken and context_key(ex) not in chosen]
    if len(train) == 0:
        raise InputError(f"--valid-fraction {fraction:g} leaves no training context; use a smaller fraction")
    return train, valid


def write_candidates(path: str, sets: Sequence[CandidateSet]) -> None:
    directory, name = os.path.split(os.path.abspath(path))
    with AtomicFiles(directory) as out:
        f = out.open(name)
        for cs in sets:
            f.write(json.dumps(cs.to_json(), ensure_ascii=False) + "\n")


def read_candidates(path: str) -> List[CandidateSet]:
    require_file(path, "candidate file", "write candidate sets with nd-pneg build-candidates")
    out = []
    with open(path, encoding="utf-8-sig") as f:
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
