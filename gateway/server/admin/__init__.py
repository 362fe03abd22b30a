"""The admin HTTP surface: authentication, the control routes, the analysis route, the
labels API, the OpenAPI document and the dashboard."""
