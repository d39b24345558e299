"""The client front end: send requests to a model spread over a fleet, get results, KPIs."""

from splitmq.client.records import AttemptRecord, RequestRecord

__all__ = ["AttemptRecord", "RequestRecord"]
