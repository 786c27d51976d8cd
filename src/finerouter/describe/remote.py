"""Description requests where an engine runs them (:class:`~finerouter.describe.OpenAIDescriber` given a
distributed ``engine``): each request on a worker, with the driver's settings and headers; the driver settles
the answers and writes the cache."""

from __future__ import annotations

from typing import Any


async def complete_on_worker(describer: Any, url: str, headers: dict[str, str], messages: list[dict[str, str]]) -> str | None:
    """One description (``describer``'s retries and parsing, its own client); None when every attempt failed.

    Raises:
        DescriptionError: a fatal answer (a bad key, an unknown model) that stops the run, as it does locally.
    """
    import httpx

    from finerouter.describe.openai_compatible import _Abort
    from finerouter.errors import DescriptionError

    describer.n_requests_ = 0  # counted on the worker, not reported back
    async with httpx.AsyncClient(timeout=describer.timeout_s, headers=headers) as client:
        try:
            return await describer._complete(client, url, messages)
        except _Abort as exc:
            raise DescriptionError(str(exc)) from None


__all__ = ["complete_on_worker"]
