"""The task-description writer interface and the offline default, :class:`PromptDescriber`.

Task discovery embeds a short description of each prompt's task rather than the raw prompt (paper §3.1.1):
two prompts about different facts but of the same kind ("multiple-choice question on world history") should
land close together. An LLM writes such descriptions (:class:`~finerouter.describe.OpenAIDescriber`);
offline, the prompt itself stands in for its description.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

from finerouter._validation import Constraint, Interval, NoneValue
from finerouter.base import Component
from finerouter.errors import ParameterError


@runtime_checkable
class Describer(Protocol):
    """Anything that turns prompts into one-sentence task descriptions.

    Attributes:
        name: identifies the writer and its settings (recorded in router artifacts).
    """

    name: str

    def describe(self, prompts: Sequence[str]) -> list[str]:
        """One description per prompt, in order."""
        ...

    def summarize(self, examples: Sequence[str]) -> str:
        """One sentence describing the task shared by ``examples`` (prompts of one discovered cluster)."""
        ...


def check_prompts(prompts: object, owner: str, what: str = "prompts") -> list[str]:
    """``prompts`` as a list of str, or a ParameterError naming the first bad item."""
    if isinstance(prompts, (str, bytes)):
        raise ParameterError(f"{owner} expects a sequence of str as {what}, not a single {type(prompts).__name__}.")
    try:
        items = list(prompts)  # type: ignore[call-overload]
    except TypeError as exc:
        raise ParameterError(f"{owner} expects a sequence of str as {what}. Got {type(prompts).__name__}.") from exc
    for i, p in enumerate(items):
        if not isinstance(p, str):
            raise ParameterError(f"{owner}: {what}[{i}] must be a str. Got {type(p).__name__}.")
    return items


def truncate(text: str, max_chars: int | None) -> str:
    """``text`` cut to at most ``max_chars`` characters, at a word boundary when one is near the end."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    if space >= max_chars * 0.8:
        cut = cut[:space]
    return cut.rstrip()


ELISION = " [...] "
"""What :func:`truncate_middle` puts where it cut."""


def truncate_middle(text: str, max_chars: int | None, head_share: float = 0.25) -> str:
    """``text`` cut to at most ``max_chars`` characters by dropping its middle: about ``head_share`` of them from
    its start and the rest from its end, at word boundaries when near, joined by :data:`ELISION`.

    What an LLM is asked about a prompt usually comes last (the question after few-shot examples or a pasted
    document), and prompts that open with the same preamble would all look alike cut at the head.
    """
    if max_chars is None or len(text) <= max_chars:
        return text
    room = max_chars - len(ELISION)
    if room < 20:
        return truncate(text, max_chars)
    n_head = int(room * head_share)
    n_tail = room - n_head
    head = truncate(text, n_head) if n_head else ""
    tail = text[-n_tail:]
    space = tail.find(" ")
    if 0 <= space <= n_tail * 0.2:
        tail = tail[space + 1 :]
    return head + ELISION + tail.lstrip()


class PromptDescriber(Component):
    """The offline default: a prompt's description is the prompt itself (optionally truncated).

    Args:
        max_chars: keep at most this many characters of each prompt (``None`` keeps all). The encoder
            truncates to its token limit anyway; this only keeps very long prompts from dominating.
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {"max_chars": [Interval("int", 1, None), NoneValue()]}

    def __init__(self, max_chars: int | None = None) -> None:
        self.max_chars = max_chars
        self._validate_params()

    @property
    def name(self) -> str:
        return "prompt" if self.max_chars is None else f"prompt|max_chars={self.max_chars}"

    def describe(self, prompts: Sequence[str], progress: object = None) -> list[str]:
        """The prompts themselves, truncated to ``max_chars``. ``progress`` is accepted for API symmetry."""
        return [truncate(p, self.max_chars) for p in check_prompts(prompts, f"{type(self).__name__}.describe")]

    def summarize(self, examples: Sequence[str]) -> str:
        """The first example (truncated to ``max_chars``, default 300): pass examples nearest the centre first."""
        items = check_prompts(examples, f"{type(self).__name__}.summarize", "examples")
        if not items:
            raise ParameterError("PromptDescriber.summarize needs at least one example.")
        return truncate(items[0], self.max_chars or 300)


__all__ = ["ELISION", "Describer", "PromptDescriber", "check_prompts", "truncate", "truncate_middle"]
