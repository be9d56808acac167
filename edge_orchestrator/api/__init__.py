"""The orchestrator's HTTP layer: routes only translate HTTP to the core and back."""
