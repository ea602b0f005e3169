# `--auth certificate[:map=...]` for every strcred-aware twistd plugin.
from securenet.cred.strcred import certificateCheckerFactory

__all__ = ["certificateCheckerFactory"]
