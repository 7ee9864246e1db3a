"""The SQL store: SQLAlchemy 2 Core over SQLite (default) or PostgreSQL."""
