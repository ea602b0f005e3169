"""securenet.cred."""
