# `--auth` checkers for every strcred-aware twistd plugin: certificate,
# sqlite (the credential database), jwt, apikey, totp.
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
