"""Routing data: the dataset type, readers for our layout and peers' layouts, splits, synthetic data."""

from finerouter.data.dataset import RoutingDataset, split_indices
from finerouter.data.prices import Prices
from finerouter.data.readers import read_routing_data

__all__ = ["Prices", "RoutingDataset", "read_routing_data", "split_indices"]
