"""The only package that talks to PostgreSQL or its binaries."""
