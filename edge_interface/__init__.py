"""The line dashboard: a FastAPI service rendering the orchestrator's decisions for the operators."""

__version__ = "0.1.0"
