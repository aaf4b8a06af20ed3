"""Bits per byte of a bigram model on a text dataset's held-out split: the bar a GPT must clear.

The bigram's counts come from the training split, with add-k smoothing; k is picked from
{1, 0.1, 0.01, 0.001} by the held-out loss itself, which favours the baseline. The unigram's
figure is printed too.

    python scripts/ngram_baseline.py dataset=fortunes
"""

from __future__ import annotations

import math
import sys

import numpy as np
from hydra import compose

from optbench.data.text import BYTES, load_text, text_info
from optbench.hydra_command import initialize_configs


def held_out_bits(train: np.ndarray, test: np.ndarray, k: float) -> tuple[float, float]:
    """(unigram, bigram) bits per byte on `test` under add-`k` counts from `train`."""
    unigram = np.bincount(train, minlength=BYTES) + k
    unigram = unigram / unigram.sum()
    pairs = np.zeros((BYTES, BYTES))
    np.add.at(pairs, (train[:-1], train[1:]), 1)
    pairs += k
    bigram = pairs / pairs.sum(axis=1, keepdims=True)
    uni = -np.log2(unigram[test]).mean()
    bi = -np.log2(bigram[test[:-1], test[1:]]).mean()
    return float(uni), float(bi)


def main(overrides: list[str]) -> None:
    with initialize_configs():
        cfg = compose("train", overrides=overrides).dataset
    data = load_text(cfg, text_info(cfg))
    train, test = data.train.numpy().astype(np.int64), data.test.numpy().astype(np.int64)
    results = {k: held_out_bits(train, test, k) for k in (1.0, 0.1, 0.01, 0.001)}
    best = min(results, key=lambda k: results[k][1])
    uni, bi = results[best]
    print(f"{cfg.name}: {len(train)} training and {len(test)} held-out bytes")
    print(f"unigram  {uni:.4f} bits/byte   bigram (add-{best:g})  {bi:.4f} bits/byte "
          f"= loss {bi * math.log(2):.4f} nats")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
