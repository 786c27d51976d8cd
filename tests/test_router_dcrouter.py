"""FineRouter on the real dcrouter data, held out by unique prompt, must beat the best single model."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter import FineRouter, RoutingDataset


@pytest.mark.slow
def test_finerouter_beats_best_single_model_on_dcrouter(shared_data, cached_minilm):
    data = RoutingDataset.read(shared_data("dcrouter"))
    train, test = data.split(test_size=0.2, seed=0)
    assert not set(train.prompts) & set(test.prompts)
    router = FineRouter(encoder=cached_minilm, seed=0).fit(train)
    emb = cached_minilm.encode(test.prompts)
    final = router.score_embeddings(emb).final
    choice = np.argmax(final, axis=1)
    observed = np.nan_to_num(test.scores, nan=0.0)
    routed = observed[np.arange(len(test)), choice].mean()
    best = train.best_single_model()
    single = observed[:, best].mean()
    print(f"dcrouter seed 0: FineRouter {routed:.4f} vs best single ({train.models[best]}) {single:.4f}")
    assert routed > single
