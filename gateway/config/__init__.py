"""Configuration: the settings model (`settings`: TOML, environment, files), the `[gateway]`
section with its one validation point into the frozen experiment model (`gateway`), and the
secret files both read (`secrets`)."""
