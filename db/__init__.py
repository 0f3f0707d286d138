"""PostgreSQL: the schema, the connection pool, and the SQL of each concern in one module."""
