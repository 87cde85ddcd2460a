"""Start the server: load the model first (errors are one line, before anything listens), then uvicorn.

uvicorn handles Ctrl-C and SIGTERM: it stops accepting, lets in-flight
requests finish (up to 30 s), runs the app's shutdown and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from inhouse.adapters import servers
from inhouse.serve.config import ServeConfig
from inhouse.serve.security import check_bind


def serve(config: ServeConfig, say: Callable[[str], None] = print) -> None:
    import uvicorn

    from inhouse.serve.app import create_app, start

    config = config.model_copy(update={"api_key": config.api_key or os.environ.get("INHOUSE_API_KEY") or None})
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_bind(config.host, config.api_key)
    say(f"loading {config.model} ...")
    services = start(config)
    registration = register(services, config)
    server = uvicorn.Server(uvicorn.Config(create_app(config, services), host=config.host, port=config.port,
                                           log_level="warning", access_log=False, timeout_graceful_shutdown=30))
    # uvicorn drains in-flight requests on SIGINT/SIGTERM, then raises the signal again for the handler
    # that was there before it; with these no-op handlers the process then ends normally (exit 0).
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        asyncio.run(_run(server, config, services.catalog, say))
    finally:
        registration.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("stopped")


def register(services, config: ServeConfig) -> servers.Registration:
    """Announce this server and keep its file naming the adapters it has loaded, so that removing
    one of them is refused while it is in use."""
    registration = servers.register(services.engine.loaded, base=services.catalog.base_ref, host=config.host,
                                    port=config.port)
    services.engine.on_loaded = registration.update
    registration.update(services.engine.loaded)  # any change that came before the hook was set
    return registration


async def _run(server, config: ServeConfig, catalog, say: Callable[[str], None]) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        port = server.servers[0].sockets[0].getsockname()[1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        adapters = len(catalog.adapters())
        say(f"serving {catalog.base_id} and {adapters} adapter{'s' * (adapters != 1)} at http://{host}:{port}/v1"
            + (" (API key required)" if config.api_key else "") + "; Ctrl-C stops")
    await task
