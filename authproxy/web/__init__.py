"""The HTTP edges: the proxy handler, the admin listener, process lifecycle and the worker supervisor."""
