"""speech-gateway: an A/B testing gateway for live speech recognition."""

__version__ = "0.1.0"
