"""The client tools behind the command line: replay, the admin CLI, the analyze and plan
commands, the demo and its dataset, Speech SDK and USP clients, the local services the demo
starts, and the configuration reference. Only `gateway.cli` imports them; the gateway
itself never does."""
