"""Score combination, the cost/tolerance policy, and the FineRouter facade."""

from finerouter.routing.decision import RoutingDecision
from finerouter.routing.policy import choose_models, combine_scores, minmax_rows

__all__ = ["RoutingDecision", "choose_models", "combine_scores", "minmax_rows"]
