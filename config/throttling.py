"""API throttles: one request counter per user (or client address) and time window, kept in the Redis cache."""

from __future__ import annotations

import logging
import math

import redis
from django.conf import settings
from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle

from config.logs import OutageWarning

logger = logging.getLogger(__name__)


def _redis() -> redis.Redis:
    """The Redis client the throttles count with: one per process and cache server, shared by its threads.

    Counting through Django's cache API cost two round trips (its `incr` sends EXISTS, then INCR) and a new
    client object per call, a tenth of the CPU of a labeler's request. Keys are the cache's own (KEY_PREFIX,
    version), on the default cache's server, with its timeouts.
    """
    config = settings.CACHES["default"]
    location, options = config["LOCATION"], config.get("OPTIONS", {})
    if not isinstance(location, str):
        location = location[0]  # several servers: Django's cache writes to the first
    location = location.split(",")[0]
    key = (location, tuple(sorted(options.items())))
    client = _clients.get(key)
    if client is None:
        # A pool of its own: redis-py's pool notices a fork and starts afresh in the child.
        client = _clients.setdefault(key, redis.Redis.from_url(location, **options))
    return client


_clients: dict[tuple, redis.Redis] = {}


_warn_redis_down = OutageWarning(
    logger, "API throttle: Redis cannot be reached, requests are let through uncounted: %s"
)


class CountingRateThrottle(SimpleRateThrottle):
    """DRF's rate throttle, counting with one Redis integer per fixed window instead of a list of request times.

    DRF's own keeps every request time of the last period in one cache entry that each request reads and
    rewrites whole: its cost grows with the rate, and concurrent requests on several gunicorn workers
    overwrite each other's counts. INCR on a counter costs the same at any rate and counts every request.
    A fixed window lets a client spend up to twice the rate across a window boundary; that is enough
    to stop a runaway client, which is what these limits are for.

    It fails open: while Redis cannot be reached, requests are let through uncounted (and a warning logged),
    so a broker or cache outage never stops labelers from labeling (tests/faults/test_redis_down_labeling.py).
    """

    @property
    def THROTTLE_RATES(self):
        # Read per request (throttles are built per request), so settings overrides apply like any other.
        return api_settings.DEFAULT_THROTTLE_RATES

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_ends = (window + 1) * self.duration
        key = self.cache.make_and_validate_key(f"{self.key}:{window}")
        try:
            # One round trip: INCR creates the counter at 1 in the window's first request; the expiry keeps it
            # for two windows, so a request that arrives late in its window still finds it.
            count, _ = _redis().pipeline(transaction=False).incr(key).expire(key, 2 * self.duration).execute()
        except (RedisError, OSError) as exc:
            _warn_redis_down(exc)
            return True
        return count <= self.num_requests

    def wait(self) -> float:
        """Seconds until the window ends and the count starts again (Retry-After)."""
        return max(1, math.ceil(self.window_ends - self.now))


class UserThrottle(CountingRateThrottle, UserRateThrottle):
    """`user` rate per signed-in user (per address for anonymous requests)."""


class AnonThrottle(CountingRateThrottle, AnonRateThrottle):
    """`anon` rate per client address, for requests without a signed-in user."""
