"""Storage: SQLModel tables, the database engine, Alembic migrations, and the queries the API and
the workers need. SQLite by default, PostgreSQL through DATABASE_URL."""
