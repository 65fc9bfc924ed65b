"""Picking the sample sequences that exercise the circuit (analysis.examples) against hand counts."""

import torch

from interp_icl.analysis.examples import circuit_exercise, exercising_sequences
from interp_icl.config import TaskConfig
from interp_icl.tasks import make_task
from interp_icl.seeding import generator


def test_scores_are_the_hand_counted_contexts_and_pairs():
    tokens = torch.tensor(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],  # one context (0, 0), always followed by 0
            [0, 1, 0, 1, 0, 1, 0, 1],  # contexts (1, 0), (0, 1), each with one next token
            [0, 0, 1, 1, 0, 1, 0, 0],  # contexts (x_{t-1}, x_{t-2}): 00 10 11 01 10 01
        ]
    )
    assert circuit_exercise(tokens, (1, 2)).tolist() == [[1, 1], [2, 2], [4, 6]]
    assert exercising_sequences(tokens, (1, 2), 2) == [2, 1]
    # without parents: distinct tokens, then distinct bigrams
    assert circuit_exercise(tokens, None)[:, 0].tolist() == [1, 2, 2]


def test_on_the_default_task_the_picks_beat_the_first_sequences():
    task = make_task(TaskConfig(vocab_size=3, parents=(1, 2), alpha=0.1, seq_len=101))
    pool = task.sample(64, generator(0, "report", "attention")).tokens
    picked = exercising_sequences(pool, (1, 2), 2)
    scores = circuit_exercise(pool, (1, 2))
    assert scores[picked, 0].min() == scores[:, 0].max() == 9  # every one of the 3^2 contexts
    assert scores[picked, 0].min() >= scores[:2, 0].max()
