"""Model health: canaries, change detection, alerts and the Custom Speech lifecycle.

Pure logic only (no network, no storage): the canary set and its per-round results, the
sequential tests that notice a variant's model changing under it, the alert latch, and the
reading of model and endpoint deprecation dates. The I/O that feeds them lives in
`gateway/server/health/`.
"""
