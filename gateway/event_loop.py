"""The event loop the gateway and the emulator run on."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed: its C transports make each socket call, of
    which a relay makes several per audio frame, several times cheaper."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
