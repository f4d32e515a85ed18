"""The samplers against Hugging Face's logits processors and warpers, on the inputs the default
suite checks against the numpy reference (`tests.support.sampling_cases`): the logits the
repetition rules leave, the tokens the warpers keep and the probabilities they leave.

One difference is by design, and asserted rather than skipped. HF's `TopPLogitsWarper` sorts the
tokens and cuts the sorted list, so of tokens tied where the cut falls it keeps only those its
sort placed above the cut; ours keeps every token tied with the least likely one kept
(`shared.sampling.filter_logits`). So ours must keep exactly HF's set closed under ties, and on
HF's set give HF's probabilities up to normalisation. `min_tokens_to_keep` (1) changes nothing
here: both always keep the most likely token, and top-k is at least 1 in both.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from shared.sampling import SamplingParams
from tests.support import sampling_reference as reference
from tests.support.sampling_cases import (
    DYADIC,
    EDGE_CASES,
    SETTINGS,
    Histories,
    float32_settings,
    processed,
    random_histories,
    random_rows,
    reference_rows,
    repeat_ruled,
)

PROBABILITY_TOLERANCE = 1e-6
ROWS = "48-token rows"


def _hf(
    logits: np.ndarray, params: SamplingParams, histories: Histories | None = None
) -> np.ndarray:
    """HF's processed scores, with the processors `generate` builds for these settings, given
    the float32 values ours is given. Row by row: HF's processors read unpadded input ids."""
    temperature, top_k, top_p, penalty = float32_settings(params)
    processors = []
    if penalty != 1:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty))
    if params.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size))
    if temperature != 1:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if top_p < 1:
        processors.append(TopPLogitsWarper(top_p))
    rows = []
    for row, row_logits in enumerate(np.asarray(logits, np.float32)):
        ids = torch.tensor([histories.sequence(row) if histories else []], dtype=torch.long)
        scores = torch.from_numpy(row_logits[None].copy())
        for processor in processors:
            scores = processor(ids, scores)
        rows.append(scores[0].numpy())
    return np.array(rows)


def _closed_under_ties(logits: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Every token at least as likely as the least likely one `kept` holds, per row."""
    lowest = np.where(kept, logits, np.inf).min(axis=1, keepdims=True)
    return logits >= lowest


def _compare(ours: np.ndarray, hf: np.ndarray, near_boundary: np.ndarray) -> float:
    """Assert ours keeps HF's set closed under ties (but where rounding at the top-p threshold
    decides), and on HF's set gives HF's probabilities up to normalisation; the largest
    probability difference."""
    ours_kept, hf_kept = np.isfinite(ours), np.isfinite(hf)
    unexplained = (ours_kept != _closed_under_ties(ours, hf_kept)) & ~near_boundary
    assert not unexplained.any(), {
        row: np.flatnonzero(tokens).tolist()
        for row, tokens in enumerate(unexplained)
        if any(tokens)
    }
    differences = [0.0]
    for row in np.flatnonzero(~(near_boundary.any(axis=1))):
        on_hf_set = np.where(hf_kept[row], ours[row], -np.inf)
        hf_probabilities = reference.probabilities(hf[row])
        differences.append(np.abs(reference.probabilities(on_hf_set) - hf_probabilities).max())
    return float(max(differences))


@pytest.mark.parametrize("n", [0, 1, 2, 3])
@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repeat_rules_match_hf_processors(penalty, n, report):
    """The scores after RepetitionPenaltyLogitsProcessor and NoRepeatNGramLogitsProcessor, value
    for value: HF's on each row's unpadded sequence, ours on the left-padded batch. Relative, as
    XLA's float32 division on CPU may differ from PyTorch's correctly rounded one by an ulp."""
    params = SamplingParams(repetition_penalty=penalty, no_repeat_ngram_size=n)
    logits, histories = random_rows(seed=n), random_histories(seed=n)
    ours = np.asarray(repeat_ruled(logits, params, histories))
    hf = _hf(logits, params, histories)
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(hf))
    finite = np.isfinite(hf)
    difference = np.max(np.abs(ours[finite] - hf[finite]) / np.abs(hf[finite]))
    report.check(
        f"oracle: logits after repetition penalty {penalty}, no_repeat_ngram_size {n} vs HF "
        "processors (relative)", "shared", ROWS, difference, 1e-6,
    )  # fmt: skip


@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_warpers_match_hf_on_random_rows(setting, tied, report):
    params = SETTINGS[setting]
    logits = random_rows(seed=len(setting), tied=tied)
    _, near_boundary = reference_rows(logits, params)
    difference = _compare(processed(logits, params), _hf(logits, params), near_boundary)
    rows = f"{ROWS}, many tied" if tied else ROWS
    report.check(f"oracle: sampler probabilities vs HF warpers ({setting})", "shared", rows,
                 difference, PROBABILITY_TOLERANCE)  # fmt: skip


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_warpers_match_hf_on_edge_cases(case):
    logits, params, _ = EDGE_CASES[case]
    row = np.asarray([logits], np.float32)
    no_allowance = np.zeros_like(row, bool)
    assert _compare(processed(row, params), _hf(row, params), no_allowance) <= PROBABILITY_TOLERANCE


def test_hf_keeps_part_of_a_tie_at_the_top_p_threshold_where_ours_keeps_it_whole():
    """Probabilities 1/2, 1/4, 1/8, 1/8 and top_p=0.875: one of the two tied tokens reaches it,
    so HF keeps three tokens and ours all four."""
    row = np.asarray([DYADIC], np.float32)
    params = SamplingParams(top_p=0.875)
    hf_kept = np.flatnonzero(np.isfinite(_hf(row, params)[0])).tolist()
    assert hf_kept in ([0, 1, 2], [0, 1, 3])
    assert np.isfinite(processed(row, params)[0]).all()


def test_hf_top_p_warper_at_1_drops_what_has_probability_0_where_top_p_1_is_off_here():
    """A temperature of 1e-4 leaves most tokens probability 0 in float32. TopPLogitsWarper(1.0)
    removes them (its cut is at cumulative probability 0); `generate` never applies it at 1, and
    top_p=1 here filters nothing, so the probabilities agree and only the kept sets differ."""
    logits = random_rows(seed=1)
    params = SamplingParams(1e-4, top_p=1.0)
    scaled = _hf(logits, params)
    hf = TopPLogitsWarper(1.0)(torch.zeros((len(logits), 0)), torch.from_numpy(scaled)).numpy()
    assert (np.isfinite(hf) == (torch.from_numpy(scaled).softmax(-1).numpy() > 0)).all()
    ours = processed(logits, params)
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(logits))
    for ours_row, hf_row in zip(ours, hf, strict=True):
        np.testing.assert_allclose(
            reference.probabilities(ours_row), reference.probabilities(hf_row), atol=1e-6
        )
