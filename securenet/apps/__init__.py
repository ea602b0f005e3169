"""securenet.apps."""
