"""PostgreSQL storage: the only layer that speaks SQL."""
