"""Task-description writers: the prompt itself (offline default) or any OpenAI-compatible LLM (cached).

Importing this package imports nothing heavy; httpx loads on the first request.
"""

from __future__ import annotations

from finerouter.describe.base import Describer, PromptDescriber
from finerouter.describe.openai_compatible import (
    DEFAULT_INSTRUCTION,
    DEFAULT_SUMMARY_INSTRUCTION,
    OpenAIDescriber,
)

__all__ = [
    "DEFAULT_INSTRUCTION",
    "DEFAULT_SUMMARY_INSTRUCTION",
    "Describer",
    "OpenAIDescriber",
    "PromptDescriber",
]
