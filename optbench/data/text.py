"""Text for language models: byte-level tokens held whole on the device, cut into windows.

Every source is bytes (a file, tiny-shakespeare, Debian's fortune databases) or a synthetic
Markov chain whose entropy rate is the best loss any model can reach. The end of the tokens
is held out: the last `test_fraction` is the test part, the `val_fraction` before it the
validation part (every decision reads it; the test part is only reported). Each training epoch draws `windows_per_epoch`
random windows of `block_size + 1` tokens; which ones is a pure function of (seed, epoch),
so a run resumed mid-epoch sees the windows an uninterrupted run would. Evaluation reads
each held-out part once, in consecutive windows.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from optbench.checks import require_fraction, require_int
from optbench.data import schemas
from optbench.data.batches import Batch, Shard, shard_slice
from optbench.data.info import DatasetInfo
from optbench.errors import UserError

BYTES = 256  # the vocabulary of byte-level text
TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)


def encode(text: str) -> torch.Tensor:
    """UTF-8 bytes as tokens 0-255."""
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def decode(tokens: torch.Tensor) -> str:
    return bytes(tokens.to(torch.uint8).tolist()).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class MarkovChain:
    """A random first-order Markov chain over `vocab` tokens: each row drawn from a symmetric
    Dirichlet(`concentration`), so lower concentrations make more predictable text."""

    transitions: np.ndarray  # (vocab, vocab), rows sum to 1
    stationary: np.ndarray  # (vocab,)

    @classmethod
    def random(cls, vocab: int, concentration: float, seed: int) -> MarkovChain:
        rng = np.random.default_rng(seed)
        transitions = rng.dirichlet(np.full(vocab, concentration), size=vocab)
        # The stationary distribution: the left eigenvector of eigenvalue 1.
        values, vectors = np.linalg.eig(transitions.T)
        stationary = np.real(vectors[:, np.argmin(np.abs(values - 1))])
        return cls(transitions, stationary / stationary.sum())

    def entropy_rate(self) -> float:
        """H = -sum_i pi_i sum_j P_ij log P_ij, in nats per token: the lowest expected loss."""
        p = self.transitions
        per_state = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
        return float(self.stationary @ per_state)

    def sample(self, length: int, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        cumulative = self.transitions.cumsum(axis=1)
        uniforms = rng.random(length)
        tokens = np.empty(length, dtype=np.uint8)
        state = int(rng.choice(len(self.stationary), p=self.stationary))
        last = len(cumulative) - 1
        for i in range(length):
            state = min(int(np.searchsorted(cumulative[state], uniforms[i])), last)
            tokens[i] = state
        return torch.from_numpy(tokens)


def markov_chain(cfg: DictConfig) -> MarkovChain:
    return MarkovChain.random(
        require_int(cfg.vocab_size, "dataset.vocab_size", 2), cfg.concentration, cfg.seed
    )


def _read(path: Path, what: str) -> torch.Tensor:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {what} {path}: {err.strerror or err}") from None
    if not data:
        raise UserError(f"{what} {path} is empty")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def _text_file(cfg: DictConfig) -> torch.Tensor:
    if cfg.path is None:
        raise UserError("dataset=text needs dataset.path=<a text file>")
    return _read(Path(cfg.path).expanduser(), "dataset.path")


def _tiny_shakespeare(cfg: DictConfig) -> torch.Tensor:
    """nanoGPT's shakespeare_char corpus, downloaded once into the data folder."""
    path = Path(cfg.root).expanduser() / "tiny_shakespeare" / "input.txt"
    if not path.is_file():
        if not cfg.download:
            raise UserError(f"tiny-shakespeare is not in {path} and download is off")
        try:
            with urllib.request.urlopen(TINY_SHAKESPEARE_URL, timeout=30) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as err:
            reason = str(getattr(err, "reason", err)).splitlines()[0]
            raise UserError(
                f"tiny-shakespeare could not be downloaded ({reason}); put input.txt in "
                f"{path.parent}, or use dataset=fortunes (offline: apt-get install fortunes)"
            ) from None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return _read(path, "tiny-shakespeare")


def _fortunes(cfg: DictConfig) -> torch.Tensor:
    """Debian's fortune-cookie databases (apt-get install fortunes): plain English text,
    each file's quotes separated by lines holding '%'; the index files are skipped."""
    folder = Path(cfg.folder)
    files = (
        sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and not p.suffix)
        if folder.is_dir()
        else []
    )
    if not files:
        raise UserError(f"no fortune databases in {folder}; on Debian: apt-get install fortunes")
    return torch.cat([_read(p, "fortune database") for p in files])


def _markov(cfg: DictConfig) -> torch.Tensor:
    return markov_chain(cfg).sample(require_int(cfg.length, "dataset.length", 2), cfg.seed + 1)


SOURCES: dict[str, Callable[[DictConfig], torch.Tensor]] = {
    "text": _text_file,
    "tiny_shakespeare": _tiny_shakespeare,
    "fortunes": _fortunes,
    "markov": _markov,
}
SCHEMAS = {
    "text": schemas.TextFileConfig,
    "tiny_shakespeare": schemas.TinyShakespeareConfig,
    "fortunes": schemas.FortunesConfig,
    "markov": schemas.MarkovConfig,
}


@dataclass(frozen=True)
class TextDataset:
    info: DatasetInfo
    train: torch.Tensor  # uint8 tokens
    val: torch.Tensor | None  # None: dataset.val_fraction is 0
    test: torch.Tensor

    def device_batches(
        self, cfg: DictConfig, *, device: torch.device, batch_size: int, eval_batch_size: int,
        drop_last: bool, seed: int, channels_last: bool, shard: Shard = (0, 1),
    ) -> tuple[TokenWindows, TokenWindows | None, TokenWindows]:  # fmt: skip
        block = self.info.shape[0]
        train = TokenWindows(self.train, block_size=block, batch_size=batch_size, device=device,
                             windows=self.info.train_size, shuffle=True, drop_last=drop_last,
                             seed=seed, shard=shard)  # fmt: skip

        def held_out(tokens: torch.Tensor, windows: int) -> TokenWindows:
            return TokenWindows(tokens, block_size=block, batch_size=eval_batch_size,
                                device=device, windows=windows, shard=shard)  # fmt: skip

        val = None if self.val is None else held_out(self.val, self.info.val_size)
        return train, val, held_out(self.test, self.info.test_size)


def _split(cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Training, validation (None without) and test tokens, in the corpus's order."""
    tokens = SOURCES[cfg.name](cfg)
    val_fraction = require_fraction(cfg.val_fraction, "dataset.val_fraction")
    test_fraction = require_fraction(cfg.test_fraction, "dataset.test_fraction")
    test_cut = len(tokens) - max(1, round(test_fraction * len(tokens)))
    val_cut = test_cut - round(val_fraction * len(tokens)) if val_fraction else test_cut
    val = tokens[val_cut:test_cut] if val_fraction else None
    return tokens[: max(val_cut, 0)], val, tokens[test_cut:]


def text_info(cfg: DictConfig) -> DatasetInfo:
    """Windows per epoch and held-out windows, from the corpus's length (read, not loaded
    onto a device: the corpora are a few MB)."""
    block = require_int(cfg.block_size, "dataset.block_size", 1)
    train, val, test = _split(cfg)
    held_out = [len(test)] + ([] if val is None else [len(val)])
    if len(train) <= block or min(held_out) <= block:
        val_part = "" if val is None else f", {len(val)} validation"
        raise UserError(
            f"dataset.block_size={block} needs more text: {len(train)} training{val_part} and "
            f"{len(test)} test tokens"
        )
    windows = cfg.windows_per_epoch or len(train) // block
    vocab = cfg.vocab_size if cfg.name == "markov" else BYTES
    val_windows = 0 if val is None else (len(val) - 1) // block
    return DatasetInfo((block,), vocab, require_int(windows, "dataset.windows_per_epoch", 1),
                       (len(test) - 1) // block, val_windows)  # fmt: skip


def load_text(cfg: DictConfig, info: DatasetInfo) -> TextDataset:
    return TextDataset(info, *_split(cfg))


class TokenWindows:
    """Batches of (inputs, next tokens), each (batch, block_size), from one token tensor."""

    def __init__(
        self, tokens: torch.Tensor, *, block_size: int, batch_size: int, device: torch.device,
        windows: int, shuffle: bool = False, drop_last: bool = False, seed: int = 0,
        shard: Shard = (0, 1),
    ):  # fmt: skip
        self.tokens = tokens.to(device)
        self.shard = shard
        self.block_size, self.batch_size, self.windows = block_size, batch_size, windows
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.offsets = torch.arange(block_size + 1, device=device)

    def __len__(self) -> int:
        n = self.windows
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """The batches of `epoch`, beginning at batch index `start_batch`."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            starts = torch.randint(len(self.tokens) - self.block_size, (self.windows,), generator=g)
        else:
            starts = torch.arange(self.windows) * self.block_size
        starts = starts.to(self.tokens.device)
        for b in range(start_batch, len(self)):
            positions = shard_slice(
                b * self.batch_size, min((b + 1) * self.batch_size, self.windows), self.shard
            )
            window = self.tokens[starts[positions, None] + self.offsets]
            window = window.long()
            yield window[:, :-1], window[:, 1:]
