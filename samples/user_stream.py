"""The private user stream: order updates, account (balance/position) updates, other events.

Run it:

    python samples/user_stream.py                  # against a local sandbox exchange
    SIXMM_API_KEY=... SIXMM_API_SECRET=... python samples/user_stream.py \\
        --url wss://6mm.com/ws --rest-url https://api.6mm.com
    python samples/user_stream.py --url ws://127.0.0.1:8765/ws   # a sandbox you started:
        # its REST URL is derived (http://127.0.0.1:8765); any other --url needs --rest-url
    python samples/user_stream.py --seconds 10     # stop by itself after 10 s (else Ctrl-C)

sixmm creates the listenKey over REST, renews it every 30 minutes, replaces it if the
exchange drops it, and closes it when the program stops. Against the sandbox the sample uses
the sandbox's own credentials and pushes one event of each kind so something shows at once
(the sandbox also sends a random event every second).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
from typing import Optional
from urllib.parse import urlsplit

import sixmm

_print_lock = threading.Lock()


def say(line: str) -> None:
    """Print one whole line: callbacks and state events come from several threads (the
    stream's reader and the listenKey keeper), and two bare prints can interleave."""
    with _print_lock:
        print(line, flush=True)


def on_order(order: sixmm.OrderUpdate) -> None:
    say(
        f"order    {order.symbol} {order.side} {order.order_type} {order.order_status} "
        f"filled {order.filled_quantity}/{order.quantity} @ {order.price}"
    )


def on_account(update: sixmm.AccountUpdate) -> None:
    for b in update.balances:
        say(f"balance  {b.asset} wallet {b.wallet_balance} available {b.available_balance}")
    for p in update.positions:
        say(f"position {p.symbol} {p.position_side} {p.quantity} @ {p.entry_price}")


def on_event(event: sixmm.UserEvent) -> None:
    say(f"event    {event.event_type} {event.data}")


def on_state(event: sixmm.StateEvent) -> None:
    say(f"[{event.state.value}] {event.reason}")


def on_error(error: BaseException) -> None:
    say(f"[error] {error}")  # e.g. AuthError: the credentials were rejected


def rest_url_for(ws_url: str) -> Optional[str]:
    """The REST URL that goes with ``ws_url``: the real exchange's for its default URL, the
    same host and port for a loopback sandbox (``ws://127.0.0.1:8765/ws`` ->
    ``http://127.0.0.1:8765``); None when it cannot be told."""
    if ws_url == sixmm.DEFAULT_WS_URL:
        return sixmm.DEFAULT_REST_URL
    parts = urlsplit(ws_url)
    if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.scheme in ("ws", "wss"):
        return f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the private user stream.")
    parser.add_argument("--url", help="WebSocket URL (default: start a local sandbox exchange)")
    parser.add_argument(
        "--rest-url",
        help="REST base URL (default: derived from --url for the real exchange and a loopback"
        " sandbox; required with any other --url)",
    )
    parser.add_argument("--seconds", type=float, help="stop after N seconds (default: Ctrl-C)")
    args = parser.parse_args()

    if args.url is not None and args.rest_url is None:
        args.rest_url = rest_url_for(args.url)
        if args.rest_url is None:
            parser.error(f"--url {args.url} needs --rest-url too (the REST API of that exchange)")
    key, secret = os.environ.get("SIXMM_API_KEY"), os.environ.get("SIXMM_API_SECRET")
    if args.url is not None and not (key and secret):
        parser.error("set SIXMM_API_KEY and SIXMM_API_SECRET to use a live --url")

    with contextlib.ExitStack() as stack:
        sandbox = None
        if args.url is None:
            from sixmm.sandbox import Sandbox  # the local exchange: pip install "sixmm[sandbox]"

            sandbox = stack.enter_context(Sandbox(port=0))
            args.url, args.rest_url = sandbox.ws_url, sandbox.rest_url
            key, secret = sandbox.api_key, sandbox.api_secret

        rest = sixmm.RestClient(api_key=key, api_secret=secret, base_url=args.rest_url)
        stack.enter_context(rest)  # closes its HTTP session at the end
        with sixmm.StreamManager(
            args.url, rest=rest, on_state=on_state, on_error=on_error
        ) as streams:
            stream = streams.user(on_order=on_order, on_account=on_account, on_event=on_event)
            if sandbox is not None and stream.wait_ready(timeout=10.0):
                for kind in ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "MARGIN_CALL"):
                    sandbox.push_user_event(kind)  # demo events, as the exchange would send
            streams.wait(args.seconds)  # Ctrl-C stops everything (and closes the listenKey)


if __name__ == "__main__":
    main()
