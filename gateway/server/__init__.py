"""The gateway process: the aiohttp application and its state (`app`, `state`), admission
and live sessions, metrics; the data-plane relays in `relay/`, the admin HTTP surface in
`admin/`."""
