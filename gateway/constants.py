"""Names shared by the gateway and its client tools.

The Redis key layout is in `gateway.stores.keys`.
"""

# The environment variable the CLI's HTTP clients (replay, admin) read an admin token from.
ADMIN_TOKEN_ENV = "SPEECH_GATEWAY_ADMIN_TOKEN"  # noqa: S105 - a variable's name
# The experiment id of sessions that matched no experiment (the default route).
NO_EXPERIMENT = "_default"
