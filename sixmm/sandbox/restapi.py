"""The sandbox's REST routes (PROTOCOL.md §5, §6, §6.1) and the call recorder middleware.

Every response uses the exchange envelope ``{"code","message","data","requestId"}``; the
request's ``X-Request-ID`` is echoed when sent. Private routes accept a Bearer token from
``/v1/public/user/login`` or an API key with an HMAC signature over the raw query + body.

Thread-safety: not thread-safe; runs on the sandbox's event loop only.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Optional, Tuple

from aiohttp import web

if TYPE_CHECKING:
    from .server import Server

__all__ = ["RestApi"]

# (http status, code, message, data)
Reply = Tuple[int, int, str, Any]
Handler = Callable[[web.Request, str], Awaitable[Reply]]


def _ok(data: Any) -> Reply:
    return 200, 0, "success", data


class RestApi:
    """Installs the REST routes of one :class:`~sixmm.sandbox.server.Server`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.orders: Dict[str, Dict[str, Any]] = {}
        self._order_seq = 9_000_000_000

    def install(self, app: web.Application) -> None:
        """Add every REST route (plus a catch-all answering unknown paths with an envelope)."""
        self._routes: Dict[Tuple[str, str], Tuple[Handler, bool]] = {
            ("GET", "/v1/time"): (self.time, False),
            ("POST", "/v1/public/user/login"): (self.login, False),
            ("POST", "/v1/private/user/listen-key"): (self.key_create, True),
            ("PUT", "/v1/private/user/listen-key"): (self.key_renew, True),
            ("DELETE", "/v1/private/user/listen-key"): (self.key_close, True),
            ("GET", "/v1/private/order/current"): (self.order_current, True),
            ("POST", "/v1/private/order/place"): (self.order_place, True),
            ("DELETE", "/v1/private/order/cancel"): (self.order_cancel, True),
        }
        app.router.add_route("*", "/{tail:.*}", self._dispatch)

    # --------------------------------------------------------------- plumbing
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        """Answer one REST call in the exchange envelope and record it."""
        body = await request.text()
        request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        faults = self.server.http_faults
        headers: Dict[str, str] = {}
        stall = faults.take_stall(request.method, request.path)
        if stall is not None:  # a server that answers late (or never, until it stops)
            until = asyncio.get_running_loop().time() + stall
            while not faults.closed and asyncio.get_running_loop().time() < until:
                await asyncio.sleep(0.05)
        limited = faults.take_limit("rest", request.path)
        try:
            if limited is not None:
                headers["Retry-After"] = f"{limited[1]:g}"
                reply: Reply = (limited[0], 5003, "Too many requests", None)
            else:
                reply = await self._reply(request, body)
        except Exception as exc:  # a sandbox bug, reported as the exchange would: 5001
            reply = (500, 5001, f"internal error: {exc!r}", None)
        status, code, message, data = reply
        envelope: Dict[str, Any] = {"code": code, "message": message}
        if code == 0 or data is not None:
            envelope["data"] = data
        envelope["requestId"] = request_id
        self.server.records.add_rest(
            {
                "method": request.method,
                "path": request.path,
                "query": request.rel_url.raw_query_string,
                "body": body,
                "headers": dict(request.headers),
                "status": status,
                "code": code,
            }
        )
        return web.json_response(envelope, status=status, dumps=_compact, headers=headers)

    async def _reply(self, request: web.Request, body: str) -> Reply:
        injected = self._injected_failure(request.path)
        if injected is not None:
            return injected
        route = self._routes.get((request.method, request.path))
        if route is None:
            if any(path == request.path for _, path in self._routes):
                return 405, 2002, f"Method not allowed: {request.method}", None
            return 404, 2002, f"Not found: {request.path}", None
        handler, private = route
        if private:
            failure = self.server.auth.check_rest(
                request.headers,
                request.rel_url.raw_query_string,
                body,
                replay_guard=request.path.startswith("/v1/private/order/"),
            )
            if failure is not None:
                return failure[0], failure[1], failure[2], None
        return await handler(request, body)

    def _injected_failure(self, path: str) -> Optional[Reply]:
        queue = self.server.fail_rest
        for i, entry in enumerate(queue):
            if entry["path"] is None or entry["path"] == path:
                entry["count"] -= 1
                if entry["count"] <= 0:
                    del queue[i]
                return entry["http_status"], entry["code"], entry["message"], None
        return None

    @staticmethod
    def _json_body(body: str) -> Optional[Dict[str, Any]]:
        if not body:
            return {}
        try:
            obj = json.loads(body)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None

    # --------------------------------------------------------------- handlers
    async def time(self, request: web.Request, body: str) -> Reply:
        ms = self.server.server_ms()
        iso = datetime.datetime.fromtimestamp(ms / 1000.0, tz=datetime.timezone.utc)
        return _ok(
            {
                "timestamp": ms // 1000,
                "timestampMs": ms,
                "iso": iso.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "timezone": "UTC",
            }
        )

    async def login(self, request: web.Request, body: str) -> Reply:
        obj = self._json_body(body)
        if obj is None:
            return 400, 2002, "Invalid JSON body", None
        if "username" not in obj or "password" not in obj:
            return 400, 2001, "Missing parameter: username/password", None
        failure, data = self.server.auth.login(obj.get("username"), obj.get("password"))
        if failure is not None:
            return failure[0], failure[1], failure[2], None
        return _ok(data)

    def _key_arg(self, request: web.Request, body: str) -> Tuple[Optional[str], Optional[Reply]]:
        obj = self._json_body(body)
        if obj is None:
            return None, (400, 2002, "Invalid JSON body", None)
        key = obj.get("listenKey", request.rel_url.query.get("listenKey"))
        if not isinstance(key, str) or not key:
            return None, (400, 2001, "Missing parameter: listenKey", None)
        return key, None

    async def key_create(self, request: web.Request, body: str) -> Reply:
        key, expiry = self.server.auth.create_key()
        self.server.records.changed()
        return _ok({"listenKey": key, "expireAt": expiry})

    async def key_renew(self, request: web.Request, body: str) -> Reply:
        key, error = self._key_arg(request, body)
        if error is not None:
            return error
        expiry = self.server.auth.renew_key(key)
        if expiry is None:
            return 200, 2002, self.server.auth.key_not_found(str(key)), None
        return _ok({"listenKey": key, "expireAt": expiry})

    async def key_close(self, request: web.Request, body: str) -> Reply:
        key, error = self._key_arg(request, body)
        if error is not None:
            return error
        assert key is not None
        if not self.server.auth.close_key(key):
            return 200, 2002, self.server.auth.key_not_found(key), None
        self.server.close_key_connections(key, "listenKey closed")
        self.server.records.changed()
        return _ok({})

    async def order_current(self, request: web.Request, body: str) -> Reply:
        symbol = request.rel_url.query.get("symbol")
        return _ok(
            [
                o
                for o in self.orders.values()
                if o["orderStatus"] == "NEW" and (symbol is None or o["symbol"] == symbol)
            ]
        )

    async def order_place(self, request: web.Request, body: str) -> Reply:
        obj = self._json_body(body)
        if obj is None:
            return 400, 2002, "Invalid JSON body", None
        for field in ("symbol", "side", "quantity"):
            if field not in obj:
                return 400, 2001, f"Missing parameter: {field}", None
        if obj["symbol"] not in self.server.s.symbols:
            return 400, 2002, f"Invalid symbol: {obj['symbol']}", None
        self._order_seq += 1
        now = self.server.server_ms()
        order = {
            "symbol": obj["symbol"],
            "orderId": str(self._order_seq),
            "clientOrderId": str(obj.get("clientOrderId") or f"sbx-{self._order_seq}"),
            "side": obj["side"],
            "positionSide": obj.get("positionSide", "BOTH"),
            "orderType": obj.get("orderType", obj.get("type", "LIMIT")),
            "timeInForce": obj.get("timeInForce", "GTC"),
            "orderStatus": "NEW",
            "price": str(obj.get("price", "0")),
            "quantity": str(obj["quantity"]),
            "filledQuantity": "0",
            "avgPrice": "0",
            "updateTime": now,
        }
        self.orders[order["orderId"]] = order
        event = dict(order, eventType="ORDER_TRADE_UPDATE", eventTime=now)
        event.update(lastFilledPrice="0", lastFilledQuantity="0")
        self.server.push_user(event)
        return _ok(order)

    async def order_cancel(self, request: web.Request, body: str) -> Reply:
        obj = self._json_body(body)
        if obj is None:
            return 400, 2002, "Invalid JSON body", None
        order = self.orders.get(str(obj.get("orderId")))
        if order is None and "clientOrderId" in obj:
            found = [o for o in self.orders.values() if o["clientOrderId"] == obj["clientOrderId"]]
            order = found[0] if found else None
        if order is None:
            return 200, 3003, "Order not found", None
        if order["orderStatus"] != "NEW":
            return 200, 3005, "Order cannot be canceled", None
        now = self.server.server_ms()
        order["orderStatus"] = "CANCELED"
        order["updateTime"] = now
        event = dict(order, eventType="ORDER_TRADE_UPDATE", eventTime=now)
        event.update(lastFilledPrice="0", lastFilledQuantity="0")
        self.server.push_user(event)
        return _ok(order)


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
