"""nd-eval on a fairseq-generate log that is incomplete: a job killed while writing (last line cut
off), a record without its hypothesis, sentence ids that never appear. Each is a one-line error
naming the file and the line (exit code 2, no JSON written); ``--allow-partial`` scores the
complete sentences, warns with the counts, and gives exactly the metrics of those sentences."""

import json
import random

import pytest

from conftest import run_cli

N = 40
# a few distinct words per sentence, so that the metrics of two different subsets differ
WORDS = ["yes", "no", "maybe", "i", "love", "cookies", "good", "fine", "what", "about", "you", "ok"]


def sentence(i: int, salt: int) -> str:
    r = random.Random(i * 7 + salt)
    return " ".join(r.choice(WORDS) for _ in range(2 + i % 4))


def generate_log() -> list:
    """The stdout of fairseq-generate for N sentences: batches out of id order, log lines mixed in."""
    order = list(range(N))
    random.Random(5).shuffle(order)
    out = ["2026-12-01 10:00:00 | INFO | fairseq_cli.generate | {'_name': None}"]
    for i in order:
        hyp = sentence(i, 1)
        out += [f"S-{i}\tquery {i}", f"T-{i}\t{sentence(i, 2)}", f"H-{i}\t-0.{i + 100}\t{hyp}",
                f"D-{i}\t-0.{i + 100}\t{hyp}", f"P-{i}\t" + " ".join(["-0.5"] * (len(hyp.split()) + 1))]
    out.append("Generate test with beam=5: BLEU4 = 1.00, 10.0/5.0/2.0/1.0 (BP=1.000, ratio=1.000)")
    return out, order


@pytest.fixture
def files(tmp_path):
    log, order = generate_log()
    (tmp_path / "train.txt").write_text("yes no maybe\ni love cookies\ngood fine\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("".join(sentence(i, 2) + "\n" for i in range(N)), encoding="utf-8")
    return tmp_path, log, order


def nd_eval(tmp_path, hyp, *extra, check=False):
    out = tmp_path / "scores.json"
    proc = run_cli(["nd-eval", "--hyp", hyp, "--train-responses", tmp_path / "train.txt", "--json", out,
                    "--quiet", *extra], check=check)
    return proc, out


def assert_one_line_error(proc, out, *needles):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("nd-eval: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert not out.exists()


def test_log_cut_off_mid_line_is_an_error_naming_the_line(files):
    tmp_path, log, order = files
    text = "\n".join(log[:-1]) + "\n"  # the run was killed before its final BLEU line ...
    cut = text.rindex("H-")  # ... while writing the last H- line (the 39th line of the last record)
    gen = tmp_path / "gen.out"
    gen.write_bytes(text[:cut + 9].encode())  # "H-<id>\t-0.1" and nothing more: no newline
    line = text[:cut].count("\n") + 1
    proc, out = nd_eval(tmp_path, gen)
    assert_one_line_error(proc, out, f"{gen}: line {line} is cut off", "--allow-partial",
                          f"score the {N - 1} complete sentences")


@pytest.mark.parametrize("damage", ["S- without H-", "ids without any line"])
def test_incomplete_records_are_errors_naming_file_and_line(files, damage):
    tmp_path, log, order = files
    if damage == "S- without H-":
        # cut exactly after the T- line of the last record: every line ends with a newline
        kept = log[:-4]  # drops H-, D-, P- and the BLEU line
        sid = order[-1]
        expected = [f"line {len(kept) - 1} starts sentence {sid} but no H-{sid} line follows"]
    else:
        # two records that never appear (e.g. a shard that was lost)
        gone = {order[3], order[10]}
        kept = [ln for ln in log if not any(ln.startswith(f"{k}-{g}\t") for g in gone for k in "STHDP")]
        first = min(gone)
        expected = [f"sentence ids {first}, {max(gone)} (2 of 0..{N - 1}) have no lines"]
    gen = tmp_path / "gen.out"
    gen.write_text("\n".join(kept) + "\n", encoding="utf-8")
    proc, out = nd_eval(tmp_path, gen)
    assert_one_line_error(proc, out, f"{gen}: ", *expected)
    if damage == "S- without H-":
        # with --ref the same log is still an error (39 hypotheses, 40 references)
        proc, out = nd_eval(tmp_path, gen, "--ref", tmp_path / "ref.txt")
        assert_one_line_error(proc, out, f"{gen}: ", *expected)


@pytest.mark.parametrize("with_ref", [False, True])
def test_allow_partial_scores_the_complete_sentences_with_a_warning(files, with_ref):
    tmp_path, log, order = files
    text = "\n".join(log[:-1]) + "\n"
    gen = tmp_path / "gen.out"
    cut = text.rindex("H-")
    gen.write_bytes(text[:cut + 12].encode())  # cut inside the last H- line
    line = text[:cut].count("\n") + 1
    lost = order[-1]
    extra = ["--ref", tmp_path / "ref.txt"] if with_ref else []
    proc, out = nd_eval(tmp_path, gen, "--allow-partial", *extra)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == (f"nd-eval: warning: {gen} is incomplete (line {line} cut "
                                   f"off, 1 id without H-): scoring {N - 1} of {N} sentences")
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["n"] == N - 1
    assert result["partial"] == {"scored": N - 1, "expected": N,
                                 "incomplete": f"line {line} cut off, 1 id without H-"}
    # the same metrics as the 39 complete sentences given as plain text, in id order
    ids = [i for i in range(N) if i != lost]
    (tmp_path / "hyp39.txt").write_text("".join(sentence(i, 1) + "\n" for i in ids), encoding="utf-8")
    (tmp_path / "ref39.txt").write_text("".join(sentence(i, 2) + "\n" for i in ids), encoding="utf-8")
    plain, plain_out = nd_eval(tmp_path, tmp_path / "hyp39.txt", "--ref", tmp_path / "ref39.txt", check=True)
    expected = json.loads(plain_out.read_text(encoding="utf-8"))
    for key in ("dist-1", "dist-2", "dist-3", "lf", "kl-1", "kl-2", "bleu-3", "bleu-4", "length"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key


def test_allow_partial_with_ref_counts_ids_missing_after_the_last(files):
    tmp_path, log, order = files
    top = [i for i in range(N) if i >= N - 3]  # the three highest ids never got written
    kept = [ln for ln in log if not any(ln.startswith(f"{k}-{g}\t") for g in top for k in "STHDP")]
    gen = tmp_path / "gen.out"
    gen.write_text("\n".join(kept) + "\n", encoding="utf-8")
    proc, out = nd_eval(tmp_path, gen, "--ref", tmp_path / "ref.txt")
    assert_one_line_error(proc, out, f"{gen} has {N - 3} hypotheses but", "--allow-partial")
    proc, out = nd_eval(tmp_path, gen, "--ref", tmp_path / "ref.txt", "--allow-partial")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == (f"nd-eval: warning: {gen} is incomplete (3 ids absent after the last): "
                                   f"scoring {N - 3} of {N} sentences")
