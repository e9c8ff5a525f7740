"""Building a study from system outputs: the sampled test queries and the pairs of responses to judge.

The paper's Table 4 samples 50 test queries and compares ND's response with each baseline's. Here
the first ``--system`` plays ND's part (``--pairs first``, the default: it is compared with each
other system) or every pair of systems is compared (``--pairs all``). The same sampled queries are
used for every pair, drawn with ``random.Random(seed)`` so a study can be rebuilt exactly.
"""

import random
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from ..evaluation.readers import read_generate, read_responses, undo_subwords
from ..io_utils import InputError, read_lines, require_file
from . import store

#: The paper's three criteria (Sec. 3.5), defined in our words for the annotators.
CRITERIA: Dict[str, str] = {
    "informativeness": "How much information related to the query the response carries: a specific, "
                       "contentful reply beats a vague or generic one (\"I don't know\", \"haha\").",
    "relevance": "How well the response fits the query: it follows from what was said and stays on topic.",
    "fluency": "How likely the response is to have been written by a person: grammatical, natural, "
               "without broken or repeated words.",
}
PAIRINGS = ("first", "all")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$")


@dataclass
class SystemOutput:
    name: str
    path: str
    responses: List[str]


def display_query(query: str) -> str:
    """A multi-turn context (turns joined by ``__eou__``) as one turn per line."""
    if "__eou__" not in query:
        return query
    return "\n".join(t.strip() for t in query.split("__eou__") if t.strip())


def parse_system(spec: str) -> Tuple[str, str]:
    """``NAME=FILE`` of ``--system``."""
    name, sep, path = spec.partition("=")
    if not sep or not path:
        raise InputError(f"--system {spec!r} is not NAME=FILE; write e.g. --system nd=nd.txt")
    if not NAME.match(name):
        raise InputError(f"--system {spec!r}: name {name!r} must be 1-40 letters, digits or _.+- (starting with "
                         f"a letter or digit)")
    return name, path


def parse_criteria(text: str, definitions: Sequence[str] = ()) -> List[Tuple[str, str]]:
    """``--criteria a,b,c`` with ``--define NAME=TEXT`` for criteria beyond the paper's three."""
    defined = dict(CRITERIA)
    for spec in definitions:
        name, sep, definition = spec.partition("=")
        name = name.strip().lower()
        if not sep or not name or not definition.strip():
            raise InputError(f"--define {spec!r} is not NAME=DEFINITION; write e.g. --define "
                             f"engagingness='How much you would like to continue the conversation.'")
        defined[name] = definition.strip()
    names = [c.strip().lower() for c in text.split(",") if c.strip()]
    if not names:
        raise InputError("--criteria is empty; give e.g. --criteria informativeness,relevance,fluency")
    out = []
    for name in names:
        if not re.match(r"^[a-z][a-z0-9_-]{0,39}$", name):
            raise InputError(f"--criteria: {name!r} must be a lowercase word (letters, digits, _ or -)")
        if name not in defined:
            raise InputError(f"--criteria: {name!r} has no definition; add --define {name}='what annotators "
                             f"should judge' (known: {', '.join(CRITERIA)})")
        if name in dict(out):
            raise InputError(f"--criteria names {name!r} twice; list each criterion once")
        out.append((name, defined[name]))
    return out


def read_system(name: str, path: str, fmt: str, field: str, subwords: str) -> SystemOutput:
    out = read_responses(path, fmt, field, subwords)
    if out.ids is not None and out.ids != list(range(len(out.ids))):
        missing = sorted(set(range(max(out.ids) + 1)) - set(out.ids))
        raise InputError(f"--system {name}={path}: the generate output lacks sentence ids "
                         f"{', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''}; give the "
                         f"complete output of fairseq-generate on the test set")
    return SystemOutput(name, path, out.hypotheses)


def _squash(text: str) -> str:
    return "".join(text.split()).lower()


def check_queries(queries: List[str], query_path: str, systems: Sequence[SystemOutput], fmt: str,
                  field: str, subwords: str) -> None:
    """The queries must be the systems' test set: same count, and the generate logs' S- lines agree."""
    for sys_out in systems:
        if len(sys_out.responses) != len(queries):
            raise InputError(f"--queries {query_path} has {len(queries)} lines but --system "
                             f"{sys_out.name}={sys_out.path} has {len(sys_out.responses)} responses; give the "
                             f"query side of the test set the systems were decoded on")
    for sys_out in systems:
        if fmt == "text":
            continue
        try:
            gen = read_generate(sys_out.path, field)
        except InputError:
            continue  # a plain text file: nothing to compare
        if not gen.sources:
            continue
        ids = [i for i in gen.ids if i in gen.sources]
        sources = undo_subwords([gen.sources[i] for i in ids], subwords)
        mismatched = [i for i, s in zip(ids, sources) if _squash(s) != _squash(queries[i])]
        if len(mismatched) * 2 > len(ids):  # tokenisation may differ on a few lines, not on most
            i = mismatched[0]
            raise InputError(f"--queries {query_path} does not match the S- lines of --system "
                             f"{sys_out.name}={sys_out.path} ({len(mismatched)} of {len(ids)} differ; line "
                             f"{i + 1}: {queries[i][:40]!r} vs {sources[ids.index(i)][:40]!r}); give the query "
                             f"file of the same test set")


def pairs_of(names: Sequence[str], pairing: str) -> List[Tuple[str, str]]:
    if pairing == "first":
        return [(names[0], other) for other in names[1:]]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def sample_lines(total: int, n: int, seed: int) -> List[int]:
    """``n`` distinct 0-based test lines, in test order, reproducible from ``seed``."""
    return sorted(random.Random(seed).sample(range(total), n))


def build_study(db: str, system_specs: Sequence[str], query_path: str, n: int, seed: int, criteria: str,
                definitions: Sequence[str] = (), pairing: str = "first", fmt: str = "auto", field: str = "H",
                subwords: str = "auto") -> Dict[str, object]:
    """Read, check, sample and write the study (atomically); returns a summary."""
    specs = [parse_system(s) for s in system_specs]
    if len(specs) < 2:
        raise InputError("give at least two --system NAME=FILE (the systems to compare)")
    names = [n_ for n_, _ in specs]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise InputError(f"--system name {dup[0]!r} is given twice; give each system a distinct name")
    if pairing not in PAIRINGS:
        raise InputError(f"--pairs {pairing!r}: choose first or all")
    crit = parse_criteria(criteria, definitions)
    systems = [read_system(name, path, fmt, field, subwords) for name, path in specs]
    counts = {len(s.responses) for s in systems}
    if len(counts) > 1:
        desc = ", ".join(f"{s.name}={s.path} has {len(s.responses)}" for s in systems)
        raise InputError(f"the systems have different numbers of responses ({desc}); give outputs of the same "
                         f"test set")
    require_file(query_path, "--queries", "give the query side of the test set (e.g. test.query from nd-prepare)")
    queries = read_lines(query_path)
    if not queries:
        raise InputError(f"--queries {query_path} is empty; give one test query per line")
    check_queries(queries, query_path, systems, fmt, field, subwords)
    if n < 1:
        raise InputError(f"--n {n}: give a number of queries >= 1")
    if n > len(queries):
        raise InputError(f"--n {n} is more than the {len(queries)} test queries of {query_path}; give --n "
                         f"{len(queries)} or less")
    lines = sample_lines(len(queries), n, seed)
    by_name = {s.name: s for s in systems}
    pairs = pairs_of(names, pairing)
    items = [(i + 1, queries[i], a, b, by_name[a].responses[i], by_name[b].responses[i])
             for a, b in pairs for i in lines]
    meta = {"seed": str(seed), "n": str(n), "pairs": pairing, "queries": query_path, "test_size": str(len(queries))}
    store.create_study(db, meta, [(s.name, s.path) for s in systems], crit, items)
    identical = sum(1 for it in items if it[4].strip() == it[5].strip())
    return {"db": db, "items": len(items), "queries": n, "pairs": pairs, "criteria": [c for c, _ in crit],
            "identical": identical}
