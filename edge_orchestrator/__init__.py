"""The edge orchestrator: trigger, capture, predict, decide, store and publish every inspection."""

__version__ = "0.1.0"
