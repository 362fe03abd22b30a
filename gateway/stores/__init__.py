"""Persistence: the only package that talks to Redis or writes data files. Outcome sinks
(JSONL file, Redis Streams with a local journal), the label store, the outcome reader, the
control plane's state and counter stores, the Redis key layout (`keys`) and connections
(`redis_client`), and `factory`, which builds the configured stores from settings. Redis and
disk failures leave the package as one error, `gateway.errors.StoreUnavailable` (`failures`)."""
