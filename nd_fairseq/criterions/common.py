"""Small pieces every criterion of the plugin shares."""

from fairseq import utils


def log_accuracy(criterion, logging_output: dict, model, net_output, sample) -> None:
    """``--report-accuracy``: the counts fairseq's label-smoothed criterion logs."""
    if criterion.report_accuracy:
        n_correct, total = criterion.compute_accuracy(model, net_output, sample)
        logging_output["n_correct"] = utils.item(n_correct.data)
        logging_output["total"] = utils.item(total.data)
