"""Start-up checks that stop a run which would otherwise train silently wrong, through fairseq-train.

* every schedule option is range-checked (λ = 8 would make the MLE weight 1-α negative);
* a teacher trained with the stock ``translation`` task (languages inferred from the file names,
  so its config records none) on a different dictionary of the same size is refused;
* a NaN or infinite entropy score is refused with the file and line;
* ``nd_fairseq.filtering.subset_dataset`` can be imported before fairseq.
"""

import subprocess
import sys

import pytest

from conftest import REPO, TINY_MODEL, TRAIN_COMMON, USER_DIR, cli_env, run_cli
from nd_fairseq.io_utils import InputError

pytestmark = pytest.mark.cli

# the stock transformer with the tiny plugin architecture's sizes (2+2 layers, 32, 2 heads)
STOCK_TINY = ["--arch", "transformer", *TINY_MODEL[2:], "--share-decoder-input-output-embed"]


def _student(data, save, *extra):
    return ["fairseq-train", data, *TRAIN_COMMON, *TINY_MODEL, "--max-update", "1", "--save-dir", save,
            "--disable-validation", "--no-epoch-checkpoints", *extra]


def _assert_one_line_error(proc, expected):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == expected


# --- item 3: schedule options ---------------------------------------------------------------------

LAMBDA_WHY = "λ/4 is the peak α, and the MLE weight 1-α turns negative above λ = 4; λ <= 0 switches ND off"


@pytest.mark.parametrize("option,value,message", [
    ("--alpha-lambda", "8", f"--alpha-lambda 8.0 is out of range: it must be in (0, 4] ({LAMBDA_WHY})"),
    ("--alpha-lambda", "0", f"--alpha-lambda 0.0 is out of range: it must be in (0, 4] ({LAMBDA_WHY})"),
    ("--alpha-lambda", "nan", f"--alpha-lambda nan is out of range: it must be in (0, 4] ({LAMBDA_WHY})"),
    ("--alpha-gamma", "-1", "--alpha-gamma -1.0 is out of range: it must be a finite number >= 0 "
                            "(γ is the update at which α peaks)"),
    ("--alpha-beta", "0", "--alpha-beta 0.0 is out of range: it must be a finite number > 0 "
                          "(β is the steepness of the schedule)"),
    ("--fixed-alpha", "1.5", "--fixed-alpha 1.5 is out of range: it must be in [0, 1] "
                             "(α weighs the ND terms against MLE (1-α))"),
    ("--entropy-ratio", "1", "--entropy-ratio 1.0 is out of range: it must be in (0, 1) "
                             "(the fraction of training pairs --entropy-subset keeps)"),
])
def test_schedule_option_out_of_range_is_a_one_line_error(data_bin, tmp_path, option, value, message):
    proc = run_cli(_student(data_bin / "full", tmp_path / "ckpt", "--criterion", "label_smoothed_cross_entropy",
                            option, value), check=False)
    _assert_one_line_error(proc, f"fairseq-train: error: {message}")
    assert not list((tmp_path / "ckpt").glob("*.pt"))


def test_schedule_options_at_their_bounds_are_accepted(data_bin, tmp_path):
    # λ = 4 (α peaks at 1), γ = 0 (peak at the first update), --fixed-alpha 0 and 1 ends of [0, 1]
    for extra in (["--alpha-lambda", "4", "--alpha-gamma", "0"], ["--fixed-alpha", "0"], ["--fixed-alpha", "1"]):
        proc = run_cli(_student(data_bin / "full", tmp_path / "ckpt", "--criterion", "label_smoothed_cross_entropy",
                                "--no-save", *extra), check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]


# --- item 2: a stock-translation teacher on another dictionary ------------------------------------

@pytest.fixture(scope="module")
def swapped_dictionary_data(data_bin, tmp_path_factory):
    """The negative set binarised with a dictionary of the same size, its first two symbols swapped."""
    root = tmp_path_factory.mktemp("swapped")
    lines = (data_bin / "full" / "dict.query.txt").read_text(encoding="utf-8").splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (root / "dict.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spm = data_bin.parent / "work" / "spm"
    run_cli(["fairseq-preprocess", "--source-lang", "query", "--target-lang", "response", "--trainpref", spm / "top",
             "--validpref", spm / "valid", "--srcdict", root / "dict.txt", "--tgtdict", root / "dict.txt",
             "--destdir", root / "bin", "--workers", "1"])
    return root / "bin", lines


def _stock_teacher(data, save):
    """A teacher trained with fairseq's own translation task and architecture (no plugin)."""
    run_cli(["fairseq-train", data, "--task", "translation", *STOCK_TINY, "--criterion", "label_smoothed_cross_entropy",
             "--optimizer", "adam", "--lr", "1e-3", "--max-tokens", "1500", "--max-update", "2", "--save-dir", save,
             "--disable-validation", "--no-epoch-checkpoints", "--no-progress-bar", "--num-workers", "0"])
    return save / "checkpoint_last.pt"


def test_stock_translation_teacher_with_another_dictionary_of_the_same_size_is_refused(
        data_bin, swapped_dictionary_data, tmp_path):
    data, swapped = swapped_dictionary_data
    teacher = _stock_teacher(data, tmp_path / "teacher")
    import torch

    task_cfg = torch.load(teacher, weights_only=False)["cfg"]["task"]
    assert task_cfg["_name"] == "translation" and task_cfg["source_lang"] is None  # inferred, not recorded
    proc = run_cli(_student(data_bin / "full", tmp_path / "nd", "--criterion", "negative_distillation",
                            "--nd-teacher-path", teacher), check=False)
    # symbols 0-3 are <s> <pad> </s> <unk>; the swapped pair is at 4 and 5
    first, second = swapped[1].split()[0], swapped[0].split()[0]
    _assert_one_line_error(proc, f"fairseq-train: error: teacher {teacher} was trained with a different source "
                                 f"dictionary (symbol 4 is {second!r} in the teacher's and {first!r} in the "
                                 f"student's); train the teacher on data binarised with the student's dictionary "
                                 f"(preprocess.sh builds both with one)")


def test_stock_translation_teacher_with_the_students_dictionary_is_checked_and_accepted(data_bin, tmp_path):
    teacher = _stock_teacher(data_bin / "negative", tmp_path / "teacher")
    proc = run_cli(_student(data_bin / "full", tmp_path / "nd", "--criterion", "negative_distillation",
                            "--nd-teacher-path", teacher, "--no-save"))
    assert "records no" not in proc.stdout + proc.stderr  # compared symbol by symbol, not only by size


# --- item 6: NaN / inf entropy scores ----------------------------------------------------------------

def test_nan_entropy_score_is_refused_with_file_and_line(data_bin, tmp_path):
    lines = (data_bin / "full" / "train.entropy").read_text().splitlines()
    lines[6] = "nan"
    bad = tmp_path / "train.entropy"
    bad.write_text("\n".join(lines) + "\n")
    proc = run_cli(_student(data_bin / "full", tmp_path / "ckpt", "--criterion", "label_smoothed_cross_entropy",
                            "--entropy-subset", "top", "--entropy-scores", bad), check=False)
    _assert_one_line_error(proc, f"fairseq-train: error: {bad}: line 7 is 'nan', not a finite entropy; rescore "
                                 f"the training set with nd-filter (scores.txt) or preprocess.sh")


@pytest.mark.parametrize("text,line", [("0.5\ninf\n1.0\n", 2), ("0.5\n1.0\n-Infinity\n", 3), ("NaN\n", 1)])
def test_infinite_entropy_scores_are_refused_by_the_reader(tmp_path, text, line):
    from nd_fairseq.filtering.subset_dataset import read_scores

    path = tmp_path / "scores.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=rf"^{path}: line {line} is '[^']+', not a finite entropy"):
        read_scores(str(path))


# --- item 17: import order --------------------------------------------------------------------------

def test_subset_dataset_imports_before_fairseq_in_a_fresh_interpreter():
    code = ("import nd_fairseq.filtering.subset_dataset as sd\n"
            "import fairseq\n"
            "from fairseq.tasks import TASK_REGISTRY\n"
            "assert 'negative_distillation' in TASK_REGISTRY\n"
            "assert TASK_REGISTRY['negative_distillation'].load_dataset.__module__ == "
            "'nd_fairseq.tasks.negative_distillation'\n"
            "print(sd.EntropySubsetDataset.__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=cli_env({"PYTHONPATH": str(REPO)}), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "EntropySubsetDataset"
