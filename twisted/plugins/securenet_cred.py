# `--auth` checkers for every strcred-aware twistd plugin: certificate,
# sqlite (the credential database), jwt, apikey, totp; db (the same, a file or
# PostgreSQL) is in securenet_db.py.
from securenet.cred._strcred import (
    apiKeyCheckerFactory,
    certificateCheckerFactory,
    jwtCheckerFactory,
    sqliteCheckerFactory,
    totpCheckerFactory,
)

__all__ = [
    "apiKeyCheckerFactory",
    "certificateCheckerFactory",
    "jwtCheckerFactory",
    "sqliteCheckerFactory",
    "totpCheckerFactory",
]
