"""High availability on PostgreSQL: shard leases with fencing terms, and who leads."""
