"""(placeholder: being written) Roll-outs started from the hub: ansible-runner, followed host by host."""

from __future__ import annotations

from hub.db import Database
from hub.settings import HubSettings


class Rollouts:
    def __init__(self, settings: HubSettings, db: Database) -> None:
        self.settings = settings
        self.db = db

    async def recover(self) -> None:
        """At start: a run the previous process left `running` is marked failed (it died with it)."""

    async def close(self) -> None:
        """Stop following; a running ansible-playbook is cancelled."""
