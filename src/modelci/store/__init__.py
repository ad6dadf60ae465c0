"""The database: records and queries (``records``), engines and migrations
(``db``), and the embedded PostgreSQL server (``pgembed``)."""
