"""GitHub Actions: authentication, the REST client, and the per-repository poller."""
