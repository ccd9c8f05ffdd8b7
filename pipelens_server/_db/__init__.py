"""The database room: embedded PostgreSQL, the pool and its lifespan, migrations, retention."""
