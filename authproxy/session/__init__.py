"""Server-side sessions: sealing with keys derived from server and session secrets (``crypto``)."""
