"""Every repository path, test and code reference that the documentation names exists in a clone.

Where the references are read from: every tracked Markdown file (README.md, RESULTS.md, docs/*.md,
the READMEs under benchmarks/, examples/, tests/) and the docstrings (module, class, function) of
the Python files under nd_fairseq/, examples/ and benchmarks/.

What counts as a reference, and what it must satisfy:

1. A *path*: text in backticks (single or double) made only of ASCII letters, digits and
   ``_ . - / { } , *``, with at least one ``/``, not starting with ``-`` or ``/``. It must be a file
   or folder of the repository (``{a,b}`` alternatives are expanded; ``*`` must match at least one
   entry), unless its first component is
   - a place where the tools write their outputs or read the user's data (:data:`USER_ROOTS`),
   - an upper-case placeholder such as ``DATA/`` or ``OUT/`` (the first component has no lower-case
     letter), or
   - a path inside another code base cited as a source (:data:`OTHER_CODE_BASES`).
   Bare file names (no ``/``) are not checked: the prose uses them as often for outputs
   (``scores.txt``, ``results.md``) as for repository files.
2. A Markdown *link target* ``[text](target)`` that is not a URL or an anchor: a file or folder,
   relative to the Markdown file.
3. A *test*: ``tests/FILE.py::NAME`` names a test function defined in that file.
4. A *code object*: ``nd_fairseq.MODULE.NAME[.ATTRIBUTE]`` names a module of the package and a
   function, class or assignment defined in it (and a method or attribute of that class).

"In the repository" means tracked by git when the tests run in a git checkout (a file that is
only on this disk would be missing from a fresh clone), else present on disk.
"""

import ast
import fnmatch
import itertools
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

USER_ROOTS = {"work", "data", "data-bin", "checkpoints", "results", "filtered", "plots"}
OTHER_CODE_BASES = {
    "fairseq",  # fairseq's own files
    "projects",  # ParlAI: projects/dialogue_unlikelihood/agents.py
    "seq2seq",  # cloudygoose/negativetraining_acl2020: seq2seq/neg_freq_posttrain_seq2seq.py
    "face",  # ShaojieJiang/FACE: face/face.py
    "code",  # ricsinaruto/dialog-eval: code/metrics/divergence_metrics.py
    "ShaojieJiang", "cloudygoose", "ricsinaruto",  # GitHub owner/name of those code bases
}

PATH = re.compile(r"[A-Za-z0-9_.\-{},*]+(?:/[A-Za-z0-9_.\-{},*]*)+")
BACKTICKED = re.compile(r"``?([^`\s]+?)``?")
LINK = re.compile(r"\]\(([^)\s]+)\)")
TEST_REF = re.compile(r"(tests/[A-Za-z0-9_/]+\.py)::([A-Za-z0-9_]+)")
CODE_REF = re.compile(r"(?<![\w.])(nd_fairseq(?:\.[A-Za-z_]\w*)+)")


def _tracked():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    files = {f for f in out.stdout.decode("utf-8").split("\0") if f}
    if not files:
        return None
    folders = {str(p) for f in files for p in Path(f).parents if str(p) != "."}
    return files | folders


TRACKED = _tracked()


def in_repository(relative: str) -> bool:
    relative = relative.rstrip("/")
    if relative in ("", "."):
        return True
    if TRACKED is not None:
        return relative in TRACKED
    return (REPO / relative).exists()


def _matches(pattern: str) -> bool:
    if "*" not in pattern:
        return in_repository(pattern)
    if TRACKED is not None:
        return any(fnmatch.fnmatchcase(p, pattern.rstrip("/")) for p in TRACKED)
    return any(REPO.glob(pattern))


def expand_braces(text: str):
    """``a/{b,c}.py`` -> ``a/b.py``, ``a/c.py`` (nested braces are not used in the docs)."""
    parts = re.split(r"\{([^{}]*)\}", text)
    fixed, choices = parts[0::2], [p.split(",") for p in parts[1::2]]
    for combo in itertools.product(*choices):
        yield "".join(f + c for f, c in itertools.zip_longest(fixed, combo, fillvalue=""))


def _sources():
    """(label, text, folder for relative links) for every tracked Markdown file and docstring."""
    if TRACKED is not None:
        names = sorted(TRACKED)
    else:  # no git: the files on disk, without outputs, build products and hidden folders
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")]
        names = [n for n in names if not (n.split("/")[0] in USER_ROOTS | {"build", "dist"}
                                          or any(c.startswith(".") or c.endswith(".egg-info") for c in n.split("/")))]
    for name in names:
        path = REPO / name
        if not path.is_file():
            continue
        if name.endswith(".md"):
            yield name, path.read_text(encoding="utf-8"), path.parent
        elif name.endswith(".py") and name.split("/")[0] in ("nd_fairseq", "examples", "benchmarks"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc:
                        where = getattr(node, "name", "module docstring")
                        yield f"{name} ({where})", doc, None


SOURCES = list(_sources())


def is_path_to_check(token: str) -> bool:
    if not PATH.fullmatch(token) or token.startswith(("-", "/")) or "://" in token:
        return False
    first = token.split("/")[0]
    if first in USER_ROOTS or first in OTHER_CODE_BASES:
        return False
    if not re.search(r"[a-z]", first):  # DATA/, OUT/, GEN/: placeholders
        return False
    return True


def test_the_rule_classifies_the_kinds_of_paths_the_docs_use():
    # a check that cannot fail is no check: each kind of token is classified as documented
    assert is_path_to_check("nd_fairseq/losses.py") and is_path_to_check("docs/")
    assert is_path_to_check("nd_fairseq/typo_of_a_module.py") and not in_repository("nd_fairseq/typo_of_a_module.py")
    assert is_path_to_check("shared/docs/method.md") and not in_repository("shared/docs/method.md")
    for skipped in ("work/chitchat/results.md", "data-bin/{full,negative}", "checkpoints/teacher",
                    "DATA/spm.model", "OUT/rankers/report.md", "projects/dialogue_unlikelihood/agents.py",
                    "--instruction/--k/--seed", "</s>", "λ/4", "results.md", "/tmp/x"):
        assert not is_path_to_check(skipped), skipped
    assert list(expand_braces("nd_fairseq/{losses,teacher}.py")) == ["nd_fairseq/losses.py", "nd_fairseq/teacher.py"]


def test_every_repository_path_in_the_docs_exists():
    missing = []
    for label, text, _ in SOURCES:
        for token in BACKTICKED.findall(text):
            if is_path_to_check(token):
                for path in expand_braces(token):
                    if not _matches(path):
                        missing.append(f"{label}: `{token}`")
    assert not missing, "paths named in the docs that a clone does not have:\n" + "\n".join(missing)


def test_every_markdown_link_resolves():
    broken = []
    for label, text, folder in SOURCES:
        if folder is None:
            continue
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            relative = (folder / target.split("#")[0]).resolve()
            try:
                name = str(relative.relative_to(REPO))
            except ValueError:
                broken.append(f"{label}: ({target}) points outside the repository")
                continue
            if not in_repository(name):
                broken.append(f"{label}: ({target})")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def _defined_names(tree):
    """Top-level names of a module -> the names defined inside each (for classes)."""
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = set()
        elif isinstance(node, ast.ClassDef):
            inner = set()
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    inner.add(sub.name)
                elif isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store):
                    inner.add(sub.attr)
                elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                    inner.add(sub.target.id)
            out[node.name] = inner
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out[n.id] = set()
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                out[(alias.asname or alias.name).split(".")[0]] = set()
    return out


def resolve_code_reference(dotted: str):
    """None if ``nd_fairseq.a.b.Name.attr`` exists, else why not."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = "/".join(parts[:cut])
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            if in_repository(candidate):
                rest = parts[cut:]
                if not rest:
                    return None
                names = _defined_names(ast.parse((REPO / candidate).read_text(encoding="utf-8")))
                if rest[0] not in names:
                    return f"{candidate} defines no {rest[0]}"
                if len(rest) > 1 and rest[1] not in names[rest[0]]:
                    return f"{rest[0]} in {candidate} has no {rest[1]}"
                if len(rest) > 2:
                    return "too deep to check"
                return None
    return "no such module"


def test_every_named_test_and_code_object_exists():
    problems = []
    for label, text, _ in SOURCES:
        for path, name in TEST_REF.findall(text):
            if not in_repository(path):
                problems.append(f"{label}: {path}::{name}: no such file")
                continue
            tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
            tests = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
            if name not in tests:
                problems.append(f"{label}: {path}::{name}: no such test")
        for dotted in CODE_REF.findall(text):
            why = resolve_code_reference(dotted.rstrip("."))
            if why:
                problems.append(f"{label}: {dotted}: {why}")
    assert not problems, "references to things that do not exist:\n" + "\n".join(problems)


@pytest.mark.parametrize("dotted, ok", [
    ("nd_fairseq.losses.soft_unlikelihood", True),
    ("nd_fairseq.criterions.negative_distillation.NegativeDistillationCriterion.distillation_terms", True),
    ("nd_fairseq.losses.no_such_function", False),
    ("nd_fairseq.no_such_module", False),
])
def test_code_references_are_resolved_against_the_source(dotted, ok):
    assert (resolve_code_reference(dotted) is None) == ok
