"""securenet.tls."""
