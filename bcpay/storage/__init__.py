"""Storage: schema, engine, migrations and the queries the library runs."""
