"""Typed client for Mithril's v2 REST API: models, errors and `MithrilClient`."""

from sky_mithril.api.client import MithrilClient, parse_retry_after
from sky_mithril.api.errors import (AmbiguousResponseError, AuthenticationError,
                                    ConflictError, ConnectionFailedError,
                                    MithrilAPIError,
                                    NotFoundError, PermissionDeniedError,
                                    RateLimitedError, ServerError,
                                    ValidationError)
from sky_mithril.api.models import (ApiKey, ApiModel, Auction, Bid, BidEvent,
                                    BidEventType, BidHistory, BidState,
                                    BidStatus, CreateApiKeyRequest,
                                    CreateBidRequest, CreatedApiKey,
                                    CreateVolumeRequest, CurrentPrice,
                                    Dollars, Instance, InstanceState,
                                    InstanceStatus, InstanceType,
                                    KubernetesCluster, KubernetesClusterState,
                                    LaunchSpecification, LimitPrice, Me,
                                    PriceHistory, PriceSeries, Project,
                                    RequestModel, SshKey, Timestamp,
                                    UpdateBidRequest, Volume, VolumeInterface)

__all__ = [
    'AmbiguousResponseError', 'ApiKey', 'ApiModel', 'Auction', 'AuthenticationError',
    'Bid', 'BidEvent', 'BidEventType', 'BidHistory', 'BidState', 'BidStatus',
    'ConflictError', 'ConnectionFailedError', 'CreateApiKeyRequest',
    'CreateBidRequest', 'CreatedApiKey',
    'CreateVolumeRequest', 'CurrentPrice', 'Dollars',
    'Instance', 'InstanceState', 'InstanceStatus', 'InstanceType',
    'KubernetesCluster', 'KubernetesClusterState',
    'LaunchSpecification', 'LimitPrice', 'Me', 'MithrilAPIError',
    'MithrilClient', 'NotFoundError', 'PermissionDeniedError', 'PriceHistory',
    'PriceSeries', 'Project', 'RateLimitedError', 'RequestModel',
    'ServerError', 'SshKey', 'Timestamp', 'UpdateBidRequest',
    'ValidationError', 'Volume', 'VolumeInterface', 'parse_retry_after',
]
