"""Prometheus exposition: the node's metric families and the collectors read at scrape time."""
