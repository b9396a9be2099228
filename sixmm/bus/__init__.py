"""The Redis Streams bus: bridges publish one manager's public topics, consumers read them.

- :class:`Bridge` (``python -m sixmm bridge``): exchange -> Redis, one stream per topic, the
  entry format in :mod:`sixmm.bus.format`, a lease so one bridge of a group publishes.
- ``StreamManager.from_redis(url)``: Redis -> the usual callbacks and books.

The private user stream is never published. Needs the ``bus`` extra (``redis``).
"""

from __future__ import annotations

from .bridge import Bridge, select_topics
from .format import FORMAT_VERSION, Entry, decode_entry, encode_entry, parse_shard, shard_of

__all__ = [
    "FORMAT_VERSION",
    "Bridge",
    "Entry",
    "decode_entry",
    "encode_entry",
    "parse_shard",
    "select_topics",
    "shard_of",
]
