"""A tiny causal (decoder-only) character language model, for unlearning beyond class labels."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_unlearn.validation import check_int


class TinyCausalLM(nn.Module):
    """A small GPT-style character model: token + position embeddings, ``layers`` pre-norm causal
    transformer blocks, a linear head over the vocabulary.

    ``forward(tokens)`` maps ``(batch, positions)`` token ids to logits of shape
    ``(batch, vocab, positions)``: the class dimension second, the layout ``F.cross_entropy``
    takes for sequences, so the same losses, metrics and callbacks as for a classifier apply
    (cross-entropy on next-token targets, ``ignore_index=-100`` for padding). About 108k
    parameters at the defaults (the 41-character vocabulary of
    :class:`~lightning_unlearn.data.SecretTextDataModule`); it trains on the embedded text in
    seconds on a CPU.

    Args:
        vocab_size: number of token ids.
        max_len: longest sequence.
        width: embedding width (divisible by ``heads``).
        heads: attention heads.
        layers: transformer blocks.

    Example::

        >>> lm = TinyCausalLM()
        >>> lm(torch.zeros(2, 16, dtype=torch.long)).shape
        torch.Size([2, 41, 16])
    """

    def __init__(self, vocab_size: int = 41, max_len: int = 41, width: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        vocab_size = check_int(vocab_size, "vocab_size", minimum=2)
        self.max_len = check_int(max_len, "max_len", minimum=1)
        width, heads = check_int(width, "width", minimum=1), check_int(heads, "heads", minimum=1)
        if width % heads:
            raise ValueError(f"`width` ({width}) must be divisible by `heads` ({heads}).")
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(self.max_len, width)
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, check_int(layers, "layers", minimum=1), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequences of {length} tokens exceed max_len={self.max_len}.")
        positions = torch.arange(length, device=tokens.device)
        h = self.token(tokens) + self.position(positions)
        mask = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device)
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.head(self.norm(h)).transpose(1, 2)
