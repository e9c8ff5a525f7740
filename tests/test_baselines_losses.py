"""The baselines' maths (UL, NT, FACE) as pure functions, against values computed by hand."""

import math

import pytest
import torch

from nd_fairseq.criterions.face import face_weights, frequency_weighted_ce, output_tokens, TokenFrequency
from nd_fairseq.criterions.negative_training import (
    ResponseWindow,
    frequent_responses,
    negative_log_likelihood_term,
    response_keys,
)
from nd_fairseq.decoding import decoder_input_for, greedy_decode
from nd_fairseq.criterions.unlikelihood_dialog import (
    TokenCounts,
    vocabulary_penalty,
    weighted_token_unlikelihood,
)

PAD, EOS = 1, 2


def _log(rows):
    return torch.tensor(rows, dtype=torch.float64).log()


# -- UL (Li et al. 2020a, vocabulary unlikelihood) -----------------------------------------------

def test_vocabulary_penalty_is_the_kl_term_of_over_produced_tokens():
    # p_model = (0, .2, .6, .2, 0, 0), p_* = (0, 0, .2, .4, .2, .2)
    model = torch.tensor([0, 2, 6, 2, 0, 0])
    human = torch.tensor([0, 0, 2, 4, 2, 2])
    beta = vocabulary_penalty(model, human, threshold=1e-3)
    # token 2: .6 log(.6 / .2) = .6 ln 3; token 1 never used by the references (no finite β);
    # token 3 under-produced; tokens 4, 5 never produced
    assert beta.tolist() == pytest.approx([0, 0, 0.6 * math.log(3), 0, 0, 0])
    assert vocabulary_penalty(model, human, threshold=0.7).sum() == 0  # .659 is below the threshold


def test_vocabulary_penalty_threshold_and_empty_counts():
    # p_model(2) = .21, p_*(2) = .2: β = .21 ln 1.05 = .010246
    model = torch.tensor([0, 0, 21, 79])
    human = torch.tensor([0, 0, 20, 80])
    assert float(vocabulary_penalty(model, human, 1e-3)[2]) == pytest.approx(0.21 * math.log(1.05))
    assert float(vocabulary_penalty(model, human, 0.02)[2]) == 0.0
    assert vocabulary_penalty(torch.zeros(4, dtype=torch.long), human).sum() == 0


def test_weighted_token_unlikelihood_by_hand():
    lprobs = _log([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    weights = torch.tensor([0.5, 0.0, 2.0], dtype=torch.float64)
    total, count, beta_sum = weighted_token_unlikelihood(lprobs, torch.tensor([0, 1]), weights)
    # position 0: -.5 ln(1 - .5); position 1: token 1 has β = 0, not penalised
    assert float(total) == pytest.approx(0.5 * math.log(2))
    assert int(count) == 1 and float(beta_sum) == pytest.approx(0.5)
    total, count, _ = weighted_token_unlikelihood(lprobs, torch.tensor([2, 2]), weights)
    assert float(total) == pytest.approx(-2 * math.log(0.75) - 2 * math.log(0.9))
    assert int(count) == 2
    total, count, _ = weighted_token_unlikelihood(lprobs, torch.tensor([2, 2]), weights,
                                                  mask=torch.tensor([True, False]))
    assert float(total) == pytest.approx(-2 * math.log(0.75)) and int(count) == 1


def test_weighted_token_unlikelihood_lowers_the_candidates_probability():
    logits = torch.zeros(1, 4, requires_grad=True)
    total, _, _ = weighted_token_unlikelihood(torch.log_softmax(logits, -1), torch.tensor([1]),
                                              torch.tensor([0.0, 1.0, 0.0, 0.0]))
    total.backward()
    assert logits.grad[0, 1] > 0  # gradient descent lowers the candidate's logit
    assert torch.all(logits.grad[0, [0, 2, 3]] < 0)


def test_token_counts_window_drops_the_oldest_batch():
    state = TokenCounts.empty_factory(5)()
    counts = TokenCounts(state, 5, window=2)
    assert not counts.add(torch.tensor([2, 2, 3]), torch.tensor([3, 4]))
    assert not counts.add(torch.tensor([3]), torch.tensor([3]))
    assert counts.add(torch.tensor([4, 4]), torch.tensor([2]))  # third batch: window full
    assert state["model"].tolist() == [0, 0, 0, 1, 2]  # batches 2 and 3
    assert state["human"].tolist() == [0, 0, 1, 1, 0]
    assert state["batches"] == 3 and len(state["history"]) == 2


def test_token_counts_cumulative_keeps_everything():
    state = TokenCounts.empty_factory(5)()
    counts = TokenCounts(state, 5, window=2, cumulative=True)
    for model, human in (([2, 2, 3], [3, 4]), ([3], [3]), ([4, 4], [2])):
        active = counts.add(torch.tensor(model), torch.tensor(human))
    assert active and state["model"].tolist() == [0, 0, 2, 2, 2] and state["human"].tolist() == [0, 0, 1, 2, 1]
    assert state["history"] == []


# -- NT (He & Glass 2020, frequent responses) ----------------------------------------------------

def test_response_keys_and_decoder_input():
    responses = torch.tensor([[5, 6, EOS, PAD], [7, EOS, PAD, PAD], [5, 6, EOS, PAD]])
    assert response_keys(responses, EOS, PAD) == ["5 6", "7", "5 6"]
    assert decoder_input_for(responses, EOS, PAD).tolist() == [[EOS, 5, 6, PAD], [EOS, 7, PAD, PAD],
                                                                [EOS, 5, 6, PAD]]


def test_response_window_ratios_and_threshold():
    window = ResponseWindow(ResponseWindow.empty(), size=2)
    assert not window.add(["a", "b"])
    assert not window.add(["a", "a"])
    assert window.add(["c", "a"])  # the first batch leaves the window
    state = window.state
    assert state["counts"] == {"a": 3, "c": 1} and state["total"] == 4
    # r(c) = 1/4, r(a) = 3/4
    assert frequent_responses(["c", "a"], state["counts"], state["total"], 0.3) == [False, True]
    assert frequent_responses(["c", "a"], state["counts"], state["total"], 0.2) == [True, True]
    assert window.ratio_of_most_frequent() == pytest.approx(0.75)


def test_negative_term_scales_eos_and_skips_padding():
    lprobs = _log([[[0.1, 0.1, 0.3, 0.5], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]]])
    responses = torch.tensor([[3, EOS, PAD]])
    value = negative_log_likelihood_term(lprobs, responses, EOS, PAD, eos_weight=0.1)
    assert float(value) == pytest.approx(math.log(0.5) + 0.1 * math.log(0.25))
    value = negative_log_likelihood_term(lprobs, responses, EOS, PAD, eos_weight=1.0)
    assert float(value) == pytest.approx(math.log(0.5) + math.log(0.25))


class _TableDecoder(torch.nn.Module):
    """Decoder stub: the logits of row b at step t are ``table[b, t]`` (ignores its inputs)."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.calls = []

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None):
        step = prev_output_tokens.size(1) - 1
        self.calls.append(prev_output_tokens.clone())
        return self.table[:, step:step + 1, :], None


class _TableModel(torch.nn.Module):
    def __init__(self, table):
        super().__init__()
        self.decoder = _TableDecoder(table)
        self.modes = []

    def encoder(self, src_tokens, src_lengths=None):
        self.modes.append(self.training)
        return None


def test_greedy_decode_follows_fairseq_generate_beam_1_rules():
    V, T = 6, 4
    table = torch.zeros(3, T + 1, V)
    # row 0: EOS is best at step 0 (not allowed: min length 1), then token 4, then EOS
    table[0, 0, EOS], table[0, 0, 5] = 9.0, 1.0
    table[0, 1, 4], table[0, 2, EOS] = 1.0, 1.0
    # row 1: pad is always best (never chosen); token 3 otherwise: forced EOS after T tokens
    table[1, :, PAD], table[1, :, 3] = 9.0, 1.0
    # row 2: token 5 then EOS
    table[2, 0, 5], table[2, 1, EOS] = 1.0, 1.0
    model = _TableModel(table)
    model.train()
    out = greedy_decode(model, torch.zeros(3, 2, dtype=torch.long), torch.tensor([2, 2, 2]), T, EOS, PAD)
    assert out.tolist() == [[5, 4, EOS, PAD, PAD], [3, 3, 3, 3, EOS], [5, EOS, PAD, PAD, PAD]]
    assert model.modes == [False] and model.training  # decoded in eval mode, mode restored
    assert model.decoder.calls[0].tolist() == [[EOS]] * 3  # decoding starts from EOS (fairseq's BOS)


# -- FACE (Jiang et al. 2019, output frequency + pre-weight) --------------------------------------

def test_face_weights_by_hand():
    # RF = (0, 0, .6, .3, .1); w = 1 - RF/.6 = (1, 1, 0, .5, .8333); sum 3.3333; x 5/3.3333 = 1.5
    w = face_weights(torch.tensor([0, 0, 6, 3, 1]))
    assert w.tolist() == pytest.approx([1.5, 1.5, 0.0, 0.75, 1.25])
    assert float(w.sum()) == pytest.approx(5.0)  # normalised to mean 1
    assert face_weights(torch.zeros(4, dtype=torch.long)).tolist() == [1, 1, 1, 1]
    assert face_weights(torch.tensor([2, 2, 2])).tolist() == [1, 1, 1]  # all RF equal


def test_output_tokens_stop_after_the_first_predicted_eos():
    predictions = torch.tensor([[4, EOS, 3, 3], [3, 3, 4, 4]])
    target = torch.tensor([[5, 6, 7, EOS], [5, EOS, PAD, PAD]])
    assert output_tokens(predictions, target, EOS, PAD).tolist() == [4, EOS, 3, 3]


def test_frequency_weighted_ce_by_hand():
    lprobs = _log([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2]])
    weights = torch.tensor([2.0, 0.5, 0.5], dtype=torch.float64)
    weighted, plain, nll = frequency_weighted_ce(lprobs, torch.tensor([0, 1]), weights, 0.0, pad=2)
    assert float(weighted) == pytest.approx(2 * math.log(2) - 0.5 * math.log(0.6))
    assert float(plain) == pytest.approx(math.log(2) - math.log(0.6))
    assert float(nll) == pytest.approx(math.log(2) - math.log(0.6))  # ε = 0: the NLL itself
    weighted, _, _ = frequency_weighted_ce(lprobs, torch.tensor([0, 2]), weights, 0.0, pad=2)
    assert float(weighted) == pytest.approx(2 * math.log(2))  # the padded position counts for nothing
    # label smoothing ε = .1 inside each term: (1 - ε - ε/2) nll + ε/2 · (-Σ_k log p_k)
    weighted, _, nll = frequency_weighted_ce(lprobs[:1], torch.tensor([0]), weights, 0.1, pad=2)
    smooth = -(math.log(0.5) + 2 * math.log(0.25))
    assert float(weighted) == pytest.approx(2 * (0.85 * math.log(2) + 0.05 * smooth))
    assert float(nll) == pytest.approx(math.log(2))  # the NLL has no smoothing


def test_unit_weights_give_fairseq_label_smoothed_loss():
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    torch.manual_seed(0)
    lprobs = torch.log_softmax(torch.randn(7, 9, dtype=torch.float64), -1)
    target = torch.tensor([3, 4, PAD, 8, 0, PAD, 5])
    ours, _, ours_nll = frequency_weighted_ce(lprobs, target, torch.ones(9), 0.1, PAD)
    ref, ref_nll = label_smoothed_nll_loss(lprobs, target, 0.1, ignore_index=PAD)
    assert float(ours) == pytest.approx(float(ref))
    assert float(ours_nll) == pytest.approx(float(ref_nll))


# -- the running statistics are checkpoint material ------------------------------------------------

def test_running_statistics_survive_a_weights_only_round_trip(tmp_path):
    ul = TokenCounts(TokenCounts.empty_factory(6)(), 6, window=1)
    ul.add(torch.tensor([2, 2]), torch.tensor([3]))
    ul.add(torch.tensor([4]), torch.tensor([4, 5]))
    nt = ResponseWindow(ResponseWindow.empty(), size=1)
    nt.add(["5 6", "7"])
    face = TokenFrequency(TokenFrequency.empty_factory(6)(), 6)
    face.add(torch.tensor([2, 3, 3]))
    path = tmp_path / "state.pt"
    torch.save({"ul": ul.state, "nt": nt.state, "face": face.state}, path)
    loaded = torch.load(path, weights_only=True)  # what fairseq's (safe) checkpoint loader allows
    assert loaded["ul"]["model"].tolist() == [0, 0, 0, 0, 1, 0] and loaded["ul"]["batches"] == 2
    assert [t.tolist() for t in loaded["ul"]["history"][0]] == [[4], [1], [4, 5], [1, 1]]
    assert loaded["nt"] == nt.state
    assert loaded["face"]["counts"].tolist() == [0, 0, 1, 2, 0, 0]
