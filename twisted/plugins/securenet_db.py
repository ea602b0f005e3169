# `--auth db:PATH_OR_URL`: the credential database checker (an SQLite file or a
# PostgreSQL database), for every strcred-aware twistd plugin.  Its own module
# beside securenet_cred.py (sqlite, jwt, apikey, totp, certificate).
from securenet.cred._strcred import databaseCheckerFactory

__all__ = ["databaseCheckerFactory"]
