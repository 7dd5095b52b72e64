"""Serving, and a shutdown that ends every answer properly.

On SIGTERM or SIGINT uvicorn stops accepting connections and waits for the requests in
flight; after its `timeout_graceful_shutdown` it cancels them mid-body, so a streaming
client sees a broken connection. Here the grace period (SHUTDOWN_GRACE_SECONDS) ends with
the app's drain instead: a stream still running gets an `error` event saying the server is
restarting and a proper end, a whole answer still waiting for the model a 503. That takes
milliseconds; uvicorn's own limit, a second later, remains for what the drain cannot reach
(a client that stopped reading), and the process exits within the grace period plus two
seconds."""

from __future__ import annotations

import asyncio
import socket
import sys

import uvicorn
from litestar import Litestar
from uvicorn.config import STARTUP_FAILURE

from modules.config import Settings
from modules.llm.api.streaming import Drain

# After the drain, how long uvicorn still waits before it cancels what is left.
BACKSTOP_SECONDS = 1


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose graceful shutdown starts `drain` after `grace` seconds."""

    def __init__(self, config: uvicorn.Config, drain: Drain, grace: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.grace = grace

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        timer = asyncio.get_running_loop().call_later(self.grace, self.drain.start)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()


def run_server(app: Litestar, settings: Settings) -> None:
    """Serve `app` as `llm-service serve` does, until SIGTERM or SIGINT."""
    grace = settings.shutdown_grace_seconds
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=grace + BACKSTOP_SECONDS,
        # Only a trusted balancer's X-Forwarded-For names the client (uvicorn believes
        # 127.0.0.1's by default).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or "",
        access_log=False,  # the app writes one structured line per request
    )
    server = DrainingServer(config, Drain.of(app), grace)
    server.run()
    if not server.started:  # as uvicorn.run: the port taken, the lifespan failed
        sys.exit(STARTUP_FAILURE)
