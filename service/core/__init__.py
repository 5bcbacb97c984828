"""Transport-neutral core: validation, access rules and the use cases."""
