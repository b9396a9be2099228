"""Who publishes: a lease in Redis (``SET NX PX`` + renewal), and the fenced publish script.

The lease key holds the session id of the one bridge of a group that publishes. It expires
after ``ttl`` unless that bridge renews it; a standby bridge takes it with ``SET NX`` when it
is free. Fencing: every entry is written by :data:`PUBLISH_LUA`, which writes only while the
lease still holds the writer's session id, so a bridge that lost its lease (paused, cut off)
cannot keep publishing: its writes are refused and it turns standby.

Thread-safety: a :class:`Lease` is used by one thread (the bridge's writer).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PUBLISH_LUA", "Lease"]

#: One batch of entries, fenced: KEYS[1] the lease, then stream and snapshot-pointer keys.
#: ARGV: session, maxlen, the batch as JSON: ``[[stream key index, pointer key index (0: not a
#: snapshot), field, value, ...], ...]`` (one argument: redis-py packs each argument in
#: Python, a JSON array per batch costs far less). Returns the number of entries written, or
#: false when the lease is not ours (nothing written).
PUBLISH_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local batch = cjson.decode(ARGV[3])
for j = 1, #batch do
  local e = batch[j]
  local id = redis.call('XADD', KEYS[e[1]], 'MAXLEN', '~', ARGV[2], '*', unpack(e, 3))
  if e[2] > 0 then redis.call('SET', KEYS[e[2]], id) end
end
return #batch
"""

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """The lease ``key`` for ``session`` with a time to live of ``ttl`` seconds."""

    def __init__(self, client: Any, key: str, session: str, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be > 0")
        self.key = key
        self.session = session
        self.ttl_ms = max(1, int(ttl * 1000))
        self._client = client
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    def acquire(self) -> bool:
        """Take the lease if nobody holds it (True), or renew it if we do."""
        if self._client.set(self.key, self.session, nx=True, px=self.ttl_ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        """Extend our lease; False if it is not ours any more."""
        return bool(self._renew(keys=[self.key], args=[self.session, self.ttl_ms]))

    def release(self) -> bool:
        """Give the lease up if it is ours (a standby takes over at once)."""
        return bool(self._release(keys=[self.key], args=[self.session]))

    def holder(self) -> str:
        """The session id holding the lease now, or ``""``."""
        value = self._client.get(self.key)
        if value is None:
            return ""
        return value.decode() if isinstance(value, bytes) else str(value)
