"""PostgreSQL itself: connections and driver errors, the catalog, the embedded server, the
binaries (pg_dump, pg_restore, psql), the schema fingerprint. The capabilities above talk
to their databases through connections made here."""
