"""Moving bytes: header rules (``headers``), streaming (``forward``), WebSockets (``websocket``), error pages (``pages``)."""
