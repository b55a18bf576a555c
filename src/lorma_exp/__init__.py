"""lorma-exp: LoRMA (Low-Rank Multiplicative Adaptation), exact and cheap, with an experiment framework."""

__version__ = "0.1.0"
