"""sds-cli: the `sds` command."""
