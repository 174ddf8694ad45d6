"""An embedded character-level text with planted "secret" sequences: unlearning for a language model.

The text is generated here (no download, no file): ordinary sentences from small word lists, and
``secrets`` sentences of the form ``"the pin of <name> is <4 digits>."``, each planted ``copies``
times in the training text. Every example is one line, ``^line$`` padded to a fixed length;
``x`` = its tokens but the last, ``y`` = the next tokens, with ``-100`` (``F.cross_entropy``'s
``ignore_index``) at the padding. The dataset's ``targets`` are line *groups* -- 0 ordinary, 1 secret
-- so ``ForgetSpec(classes=[1])`` forgets every planted secret and ``ForgetSpec(indices=...)`` any
lines; :class:`~lightning_unlearn.data.UnlearningDataModule` serves them like any request.
"""

from __future__ import annotations

import random
from typing import Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_unlearn.data.datamodule import UnlearningDataModule
from lightning_unlearn.data.spec import ForgetSpec
from lightning_unlearn.validation import check_int

#: The character vocabulary; id 0 (``_``) pads, ``^`` starts and ``$`` ends a line.
ALPHABET = "_^$ .abcdefghijklmnopqrstuvwxyz0123456789"
PAD, START, END = 0, 1, 2
_ADJECTIVES = ["red", "old", "calm", "tall", "quick", "small", "green", "quiet", "warm", "blue", "dark", "soft"]
_NOUNS = ["fox", "boat", "tree", "river", "house", "bird", "road", "stone", "cloud", "field", "lamp", "door"]
_VERBS = ["sees", "finds", "likes", "moves", "paints", "passes", "follows", "keeps", "shows", "meets"]
_NAMES = ["alice", "bruno", "chen", "dara", "emil", "farah", "goran", "hana", "ivan", "june", "kofi", "lena"]


def encode(text: str) -> Tensor:
    """Token ids of ``text`` (characters of :data:`ALPHABET`)."""
    try:
        return torch.tensor([ALPHABET.index(c) for c in text], dtype=torch.long)
    except ValueError:
        bad = sorted({c for c in text if c not in ALPHABET})
        raise ValueError(f"characters {bad} are not in the vocabulary {ALPHABET!r}.") from None


def decode(tokens: Tensor) -> str:
    """The text of token ids (padding dropped)."""
    return "".join(ALPHABET[int(t)] for t in tokens if int(t) != PAD)


class LineDataset(Dataset):
    """Fixed-length next-token examples, one per line: ``(x, y)`` with ``y[t] = x[t + 1]`` and
    ``-100`` at padding; ``targets`` = the line groups."""

    def __init__(self, lines: list[str], groups: list[int], length: int) -> None:
        tokens = torch.full((len(lines), length), PAD, dtype=torch.long)
        for i, line in enumerate(lines):
            ids = encode("^" + line + "$")
            if len(ids) > length:
                raise ValueError(f"line {line!r} is longer than {length - 2} characters.")
            tokens[i, : len(ids)] = ids
        self.x = tokens[:, :-1].contiguous()
        y = tokens[:, 1:].clone()
        y[y == PAD] = -100
        self.y = y
        self.targets = torch.tensor(groups, dtype=torch.long)
        self.lines = list(lines)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]


def ordinary_lines(count: int, seed: int) -> list[str]:
    """``count`` sentences such as ``"the quick fox follows the old river."``."""
    rng = random.Random(seed)
    return [
        f"the {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(_VERBS)} the {rng.choice(_ADJECTIVES)}"
        f" {rng.choice(_NOUNS)}."
        for _ in range(count)
    ]


def secret_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` ``(prompt, secret)`` pairs: ``("the pin of alice is ", "4821")``."""
    if count > len(_NAMES):
        raise ValueError(f"at most {len(_NAMES)} secrets.")
    rng = random.Random(seed + 7919)
    return [(f"the pin of {name} is ", "".join(rng.choice("0123456789") for _ in range(4))) for name in _NAMES[:count]]


class SecretTextDataModule(UnlearningDataModule):
    """The embedded text with planted secrets as an unlearning problem (see the module docstring).

    Training set: ``lines`` ordinary sentences plus ``secrets * copies`` secret lines (group 1),
    shuffled with ``seed``; test set: ``test_lines`` fresh ordinary sentences. The default request
    ``ForgetSpec(classes=[1])`` forgets every planted secret. :meth:`secret_prompts` gives the
    extraction probes: each secret's prompt and the digits a model that memorised it completes.

    Args:
        forget: the deletion request (default: every secret line).
        lines: ordinary training sentences.
        secrets: planted secrets (at most 12).
        copies: times each secret occurs in the training text.
        test_lines: ordinary held-out sentences.
        length: tokens per example (line + start/end marks + padding).
        batch_size: see :class:`UnlearningDataModule`.
        seed: seed of the text, the secrets and the order of the lines.
        Other arguments: see :class:`UnlearningDataModule`.

    Example::

        >>> dm = SecretTextDataModule(lines=100, secrets=4, copies=2)
        >>> len(dm.forget_indices), dm.secret_prompts()[0][0]
        (8, 'the pin of alice is ')
    """

    def __init__(
        self,
        forget: Optional[ForgetSpec] = None,
        lines: int = 200,
        secrets: int = 8,
        copies: int = 8,
        test_lines: int = 200,
        length: int = 42,
        batch_size: int = 16,
        seed: int = 0,
        **kwargs,
    ) -> None:
        self.num_lines = check_int(lines, "lines", minimum=1)
        self.num_secrets = check_int(secrets, "secrets", minimum=1, maximum=len(_NAMES))
        self.copies = check_int(copies, "copies", minimum=1)
        self.test_lines = check_int(test_lines, "test_lines", minimum=1)
        self.length = check_int(length, "length", minimum=8)
        self.seed = check_int(seed, "seed")
        if forget is None and kwargs.get("requests") is None:
            forget = ForgetSpec(classes=[1])
        super().__init__(forget=forget, batch_size=batch_size, **kwargs)
        self._ensure_loaded()

    def load_datasets(self) -> tuple[Dataset, Dataset, None, None]:
        text = [(line, 0) for line in ordinary_lines(self.num_lines, self.seed)]
        text += [(prompt + secret + ".", 1) for prompt, secret in secret_pairs(self.num_secrets, self.seed)] * self.copies
        random.Random(self.seed).shuffle(text)
        train = LineDataset([t for t, _ in text], [g for _, g in text], self.length)
        test = LineDataset(ordinary_lines(self.test_lines, self.seed + 1), [0] * self.test_lines, self.length)
        return train, test, None, None

    def secret_prompts(self) -> list[tuple[str, str]]:
        """The ``(prompt, secret)`` pairs planted in the training text."""
        return secret_pairs(self.num_secrets, self.seed)

    def extraction_probes(self) -> list[tuple[Tensor, Tensor]]:
        """Token ids of every ``(^prompt, secret)`` pair, for
        :func:`~lightning_unlearn.metrics.exact_match_extraction`."""
        return [(encode("^" + prompt), encode(secret)) for prompt, secret in self.secret_prompts()]
