"""End to end on CPU: PNEG negatives from a local completions server, candidate sets, fairseq-train
rankers (sentence_ranking task, tiny roberta) per negative source, R@1/MRR on both test sets."""

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import USER_DIR, run_cli
from nd_fairseq.pneg.backends import OpenAICompletionsBackend
from nd_fairseq.pneg.candidates import read_candidates
from nd_fairseq.pneg.data import read_dailydialog_pp, read_pairs
from nd_fairseq.pneg.generate import GenerationConfig, generate
from nd_fairseq.pneg.prompt import demonstration_pool

FIX = Path(__file__).parent / "fixtures" / "pneg"
sys.path.insert(0, str(FIX))
from completions_server import CompletionsServer  # noqa: E402


def subset(src: Path, dst: Path, split: str, n: int) -> Path:
    for side in ("query", "response"):
        lines = (src / f"{split}.{side}").read_text(encoding="utf-8").splitlines()[:n]
        (dst / f"{split}.{side}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst / split


@pytest.mark.cli
def test_ranking_benchmark_end_to_end(chitchat_text, tmp_path):
    t0 = time.perf_counter()
    train = subset(chitchat_text, tmp_path, "train", 96)
    test = subset(chitchat_text, tmp_path, "test", 40)
    negs = tmp_path / "pneg.jsonl"
    pool = demonstration_pool(read_dailydialog_pp(str(FIX / "dailydialog_pp_sample.jsonl")))
    with CompletionsServer() as server:
        backend = OpenAICompletionsBackend(server.url, "m", concurrency=4, backoff_base=0.0)
        summary = generate(read_pairs(str(train)), pool, backend, str(negs), GenerationConfig(), progress=False)
    assert summary["total"]["ok"] >= 90  # a few chitchat turns are too short for the copy filter's liking

    cands = tmp_path / "cands"
    run_cli(["nd-pneg", "build-candidates", "--train", train, "--test", test, "--sources", "random,pneg",
             "--pneg", negs, "--out-dir", cands])
    built = json.loads((cands / "summary.json").read_text())
    n_train = built["train"]["pneg"]
    assert built["train"]["random"] == n_train >= 90
    assert built["test"] == {"random": 40, "adversarial": 40}

    work = tmp_path / "runs"
    out = run_cli(["nd-pneg", "rank-benchmark", "--candidates", cands, "--work-dir", work, "--max-update", "4",
                   "--max-epoch", "1", "--no-valid", "--batch-size", "16", "--quiet"])
    report = json.loads((work / "report.json").read_text())
    assert report["tests"]["adversarial"] == {"contexts": 40, "negatives": {"context": 40, "random": 160}}
    assert set(report["sources"]) == {"random", "pneg"}  # bm25/human: same code path, see test_pneg_data
    for source, entry in report["sources"].items():
        assert entry["train_contexts"] == n_train
        assert Path(entry["checkpoint"]).name == "checkpoint_last.pt"
        log = (work / source / "checkpoints" / "train.log").read_text()
        assert "--user-dir " + USER_DIR in log and "num_updates 4" in log
        for test_set in ("random", "adversarial"):
            m = entry[test_set]
            assert m["n"] == 40 and 0.0 <= m["R@1"] <= m["MRR"] <= 1.0
            assert m["MRR"] >= 1 / 6 - 1e-9  # 6 candidates: the worst rank is 6
    assert "| pneg |" in out.stdout and "Adversarial R@1" in (work / "report.md").read_text()

    # the scorer feeds the model exactly what fairseq's sentence_ranking task fed it in training
    import fairseq  # noqa: F401
    from fairseq import tasks
    from nd_fairseq.pneg.ranker import Ranker, RankerConfig

    entry = report["sources"]["pneg"]
    data_dir = str(work / "pneg" / "data")
    ranker = Ranker(entry["checkpoint"], data_dir, RankerConfig())
    task = tasks.setup_task(ranker_task_args(data_dir))
    task.load_dataset("train")
    sets = read_candidates(str(cands / "train.pneg.jsonl"))
    for i in (0, 7, len(sets) - 1):
        item = task.datasets["train"][i]
        ctx = ranker.encoder.context(sets[i].context)
        for j in (0, 5, 10):
            expected = ranker.encoder.pair(ctx, ranker.encoder.candidate(sets[i].candidates[j]))
            assert item[f"net_input{j + 1}.src_tokens"].tolist() == expected
        assert item["target"] == sets[i].label
    scores = ranker.score(sets[:3])
    assert [len(s) for s in scores] == [11, 11, 11]
    assert time.perf_counter() - t0 < 120


def ranker_task_args(data_dir):
    """The task options rank-benchmark trains with (RankerConfig defaults), unshuffled."""
    import argparse

    from nd_fairseq.pneg.ranker import RankerConfig

    cfg = RankerConfig()
    return argparse.Namespace(task="sentence_ranking", criterion="sentence_ranking", data=data_dir, num_classes=11,
                              init_token=0, separator_token=2, max_option_length=cfg.max_option_length,
                              shorten_method="truncate", shorten_data_split_list="", max_positions=cfg.max_positions,
                              seed=1, dataset_impl="mmap", no_shuffle=True)


@pytest.mark.cli
def test_rank_benchmark_validates_per_source_stops_early_and_reports(tmp_path):
    from nd_fairseq.pneg.data import write_dailydialog_pp
    from nd_fairseq.pneg.shortcuts import baseline_metrics, shortcut_warnings
    from test_pneg_benchmark import graded_positives

    write_dailydialog_pp(str(tmp_path / "train.jsonl"), graded_positives(48))
    write_dailydialog_pp(str(tmp_path / "test.jsonl"), graded_positives(10))
    cands = tmp_path / "cands"
    run_cli(["nd-pneg", "build-candidates", "--train", tmp_path / "train.jsonl", "--test", tmp_path / "test.jsonl",
             "--sources", "random,human", "--valid-fraction", "0.25", "--seed", "3", "--out-dir", cands])
    work = tmp_path / "runs"
    # lr 0: the validation loss never changes, so patience 1 must stop after epoch 2 of 6 (epoch 1 sets the
    # best loss, epoch 2 does not lower it); fairseq saves checkpoint_best on a tie, so the best is epoch 2
    out = run_cli(["nd-pneg", "rank-benchmark", "--candidates", cands, "--work-dir", work, "--max-epoch", "6",
                   "--patience", "1", "--lr", "0", "--seed", "7", "--quiet"])
    report = json.loads((work / "report.json").read_text())
    assert report["candidates"]["valid_protocol"] == "source" and report["candidates"]["seed"] == 3
    for source in ("random", "human"):
        e = report["sources"][source]
        log = (work / source / "checkpoints" / "train.log").read_text()
        assert "--patience 1" in log and e["validated"] and e["validation"] == "source"
        assert e["valid_contexts"] == 12 and e["train_contexts"] == 36 and e["seed"] == 7
        assert (e["epochs_run"], e["best_epoch"], e["early_stopped"]) == (2, 2, True)
        assert list(e["valid_loss"]) == ["1", "2"] and e["train_seconds"] > 0
        labels = (work / source / "data" / "label" / "valid.label").read_text().split()
        assert len(labels) == 12  # its own validation file, not another source's
    tests = {t: read_candidates(str(cands / f"test.{t}.jsonl")) for t in ("random", "adversarial")}
    for t, sets in tests.items():
        want = baseline_metrics(sets)
        assert report["baselines"][t] == json.loads(json.dumps(want))
    assert report["warnings"] == shortcut_warnings(report["baselines"], report["sources"])
    md = (work / "report.md").read_text()
    assert md == out.stdout.split("\n-> ")[0].rstrip("\n") + "\n"
    assert "ranker seed 7; candidate sets built with seed 3, positive: random" in md
    assert "validation protocol: per source" in md and "0.25 of the contexts of" in md
    assert "early stopping with patience 1" in md
    row = next(line for line in md.splitlines() if line.startswith("| human |"))
    assert row.split(" | ")[5:9] == ["36", "7", "2", "2"] and row.endswith(" s |")
    m = baseline_metrics(tests["adversarial"])["shortest"]
    assert f"| shortest candidate | " in md and f"{m['R@1']:.3f} | {m['MRR']:.3f} |" in md
    assert "| random (expected value) | 0.167 | 0.408 | 0.167 | 0.408 |" in md  # 1/6 and H_6 / 6
    assert "rule: a warning when the best baseline's R@1 is at least 0.8 times the best ranker's R@1" in md
    assert ("Warning: " in md) == bool(report["warnings"])
    assert "| test.adversarial | human | 50 | 8.0 | 8 | 8-8 |" in md  # "My cousin i loves painting fences number j."
    bad = run_cli(["nd-pneg", "rank-benchmark", "--candidates", cands, "--work-dir", work, "--patience", "-1"],
                  check=False)
    assert bad.returncode == 2
    assert bad.stderr == "nd-pneg: error: --patience must be >= 0 (0: no early stopping), got -1\n"
