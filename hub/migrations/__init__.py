"""Alembic migrations of the hub's database (applied by hub.db.Database.migrate, configured in code)."""
