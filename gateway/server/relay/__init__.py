"""The data plane: the USP WebSocket relay, the REST short-audio relay, shadows, upstream
connections and the per-backend gate (breaker and retry hold)."""
