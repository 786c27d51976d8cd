"""What an encoder's tokenizer makes of texts: how many tokens, and which part of a long text the encoder reads
(the window of ``max_seq_length`` tokens, cut from the text's head, its tail, or both).

sentence-transformers keeps a text's first tokens. Prompts that open with the same long preamble (a system
prompt, few-shot examples: every ARC prompt of RouterBench starts with the same 1,653 characters) are then the
same text to the encoder, and a router cannot tell them apart. Their question comes last, so reading the end
(``"tail"``), or the start and the end (``"head_tail"``), restores it; :func:`shared_head_share` measures how
many of a corpus's texts would collide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from finerouter.errors import EncoderError

HEAD_TAIL_HEAD_SHARE = 0.25
"""With ``truncation="head_tail"``, the share of the window given to the text's first tokens (the rest to its
last), as in Sun et al. (2019), "How to Fine-Tune BERT for Text Classification", whose head + tail cut read long
texts best."""

WINDOW_SLACK = 2
"""Tokens left free when a text is cut: re-tokenised, the joined text may differ at the joint."""

SHARED_HEAD_SHARE = 0.05
"""``truncation="auto"`` reads head and tail when at least this share of the unique texts share the first half of
their window with another text."""

SHARE_SAMPLE = 20_000
""":func:`shared_head_share` reads at most this many unique texts."""


def window_budget(tokenizer: Any, max_seq_length: int) -> int:
    """Tokens of text the window holds (``max_seq_length`` less the special tokens and :data:`WINDOW_SLACK`)."""
    return max(2, max_seq_length - tokenizer.num_special_tokens_to_add(pair=False) - WINDOW_SLACK)


def window_texts(tokenizer: Any, texts: Sequence[str], max_seq_length: int, truncation: str, cap: int,
                 name: str = "encoder") -> list[str]:
    """What of each text a model with ``tokenizer`` and a window of ``max_seq_length`` tokens reads, as text.

    ``"tail"`` and ``"head_tail"``: a text that may not fit the window (more characters than it has tokens) is
    tokenised (its first and last ``cap`` characters), and the characters of its first and last tokens are
    kept (``"tail"``: none from the start), joined by a line break; a text that fits is returned as it is.
    ``tokenizer`` is a Hugging Face tokenizer; a slow one (no character offsets) gives the kept tokens decoded.
    """
    out = list(texts)
    budget = window_budget(tokenizer, max_seq_length)
    long = [i for i, t in enumerate(texts) if len(t) > budget]  # a token covers at least one character
    if not long:
        return out
    n_head = int(budget * HEAD_TAIL_HEAD_SHARE) if truncation == "head_tail" else 0
    n_tail = budget - n_head
    kw = dict(add_special_tokens=False, truncation=False, return_offsets_mapping=True, return_attention_mask=False,
              return_token_type_ids=False, verbose=False)
    try:
        if not getattr(tokenizer, "is_fast", False):
            for i in long:
                out[i] = _decoded_window(tokenizer, texts[i], cap, budget, n_head)
            return out
        heads = tokenizer([texts[i][:cap] for i in long], **kw)["offset_mapping"]
        tails = tokenizer([texts[i][-cap:] for i in long], **kw)["offset_mapping"]
    except Exception as exc:
        raise EncoderError(f"Tokenizer of {name!r} failed to cut {len(long)} texts to its window: {exc}") from exc
    for i, head, tail in zip(long, heads, tails):
        text = texts[i]
        if len(text) <= cap and len(head) <= budget:
            continue  # it fits
        head_end = head[n_head - 1][1] if n_head else 0
        base = len(text) - min(len(text), cap)  # where the tokenised tail starts in the text
        tail_start = base + (tail[-n_tail][0] if len(tail) >= n_tail else 0)
        if tail_start <= head_end:
            out[i] = text[:cap]
        elif n_head:
            out[i] = text[:head_end] + "\n" + text[tail_start:]
        else:
            out[i] = text[tail_start:]
    return out


def _decoded_window(tokenizer: Any, text: str, cap: int, budget: int, n_head: int) -> str:
    """:func:`window_texts` for a tokenizer without character offsets (a slow one)."""
    ids = tokenizer(text[:cap] if n_head else text[-cap:], add_special_tokens=False, truncation=False)["input_ids"]
    if len(text) <= cap and len(ids) <= budget:
        return text
    tail = tokenizer(text[-cap:], add_special_tokens=False, truncation=False)["input_ids"] if n_head else ids
    head = tokenizer.decode(ids[:n_head]) + "\n" if n_head else ""
    return head + tokenizer.decode(tail[-(budget - n_head):])


def shared_head_share(tokenizer: Any, texts: Sequence[str], max_seq_length: int, cap: int,
                      max_texts: int = SHARE_SAMPLE) -> float:
    """Share of the unique ``texts`` whose first half-window of tokens is also the start of another text's.

    To a model that reads the head, such texts are mostly (or wholly) their shared start. Texts shorter than
    half a window are never counted. Sorting the token prefixes puts every text next to the one it shares
    most with. Of more than ``max_texts`` unique texts, an evenly spaced ``max_texts`` are read (each cut to
    ``cap // 2`` characters, as much as half a window can hold), so the cost is bounded.
    """
    unique = list(dict.fromkeys(texts))
    if len(unique) > max_texts:
        unique = [unique[i] for i in np.linspace(0, len(unique) - 1, max_texts).astype(int)]
    half = window_budget(tokenizer, max_seq_length) // 2
    long = [t[: cap // 2] for t in unique if len(t) > half]
    if len(unique) < 2 or len(long) < 2:
        return 0.0
    try:
        ids = tokenizer(long, add_special_tokens=False, truncation=True, max_length=half,
                        return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]
    except Exception as exc:
        raise EncoderError(f"Tokenizer failed on {len(long)} texts: {exc}") from exc
    prefixes = sorted(tuple(row) for row in ids if len(row) >= half)
    shared = sum(
        1 for j, p in enumerate(prefixes)
        if (j > 0 and prefixes[j - 1] == p) or (j + 1 < len(prefixes) and prefixes[j + 1] == p)
    )
    return shared / len(unique)


def count_tokens(tokenizer: Any, texts: Sequence[str], cap: int, name: str = "encoder") -> list[int]:
    """Tokens ``tokenizer`` makes of each text (no special tokens); a text longer than ``cap`` characters is
    counted on its first ``cap`` and the count scaled by its length."""
    try:
        ids = tokenizer([t[:cap] for t in texts], add_special_tokens=False, truncation=False,
                        return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]
    except Exception as exc:
        raise EncoderError(f"Tokenizer of {name!r} failed on {len(texts)} texts: {exc}") from exc
    return [len(row) if len(text) <= cap else round(len(row) * len(text) / cap) for text, row in zip(texts, ids)]


__all__ = [
    "HEAD_TAIL_HEAD_SHARE",
    "SHARED_HEAD_SHARE",
    "SHARE_SAMPLE",
    "WINDOW_SLACK",
    "count_tokens",
    "shared_head_share",
    "window_budget",
    "window_texts",
]
