# `--auth` checkers for every strcred-aware twistd plugin: certificate,
# db (the credential database: an SQLite file or PostgreSQL), sqlite (a file),
# jwt, apikey, totp.
from securenet.cred._strcred import (
    apiKeyCheckerFactory,
    certificateCheckerFactory,
    databaseCheckerFactory,
    jwtCheckerFactory,
    sqliteCheckerFactory,
    totpCheckerFactory,
)

__all__ = [
    "apiKeyCheckerFactory",
    "certificateCheckerFactory",
    "databaseCheckerFactory",
    "jwtCheckerFactory",
    "sqliteCheckerFactory",
    "totpCheckerFactory",
]
