"""The gateway's I/O: the only code that touches sockets (aiohttp server and client)."""
