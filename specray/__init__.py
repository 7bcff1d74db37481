"""specray: distributed offline generation with lossless, adaptive speculative decoding."""

__version__ = "0.1.0"
