"""Session storage behind one small interface (``base.SessionStore``): ``memory`` for
one process, ``dynamodb`` shared by every replica."""
