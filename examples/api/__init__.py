"""
The Flask JWT tutorial on twisted.web with securenet.web: C{/login},
C{/protected}, C{/admin}, C{/user} (see L{examples.api.app}).

    PYTHONPATH=. .venv/bin/python -m examples.api --db var/api.db --token-key var/api-token.key
"""

from examples.api.app import main, make_resource, make_site

__all__ = ["main", "make_resource", "make_site"]
