"""The release gate: admit an artifact only on matching digests from enough independent,
trusted rebuilders, under a policy."""
