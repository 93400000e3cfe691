"""GitHub webhooks: a receiver that answers within a second, a dispatcher that records after the
answer, and forwarding to the shard that owns a repository."""
