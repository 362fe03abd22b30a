"""The I/O side of model health: the canary runner (canary rounds over USP), the Custom
Speech management client (models, endpoints and their expiry dates), the alert webhook,
and the monitor that turns rounds and lifecycle reads into alerts."""
