"""Commands of `sds` that live in their own modules."""
