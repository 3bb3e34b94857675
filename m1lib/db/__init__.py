"""M1's database: typed models, engine and sessions, Alembic migrations."""
