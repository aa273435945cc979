"""Pure request policy: path normalisation (``paths``) and compiled route matching (``routes``)."""
