"""The evaluation harness: router metrics (:mod:`.metrics`), the experiment runner over seeded splits
(:mod:`.runner`), the Markdown report and figures (:mod:`.report`, :mod:`.plots`) and enlarged model pools for
stress settings (:mod:`.stress`). Importing it is cheap: matplotlib and scipy load inside the functions."""
