"""securenet.protocol."""
