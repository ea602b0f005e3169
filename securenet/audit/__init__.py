"""securenet.audit."""
