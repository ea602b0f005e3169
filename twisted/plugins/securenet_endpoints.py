# `securenet:` server and client endpoint strings.
from securenet._plugins import securenetClientParser, securenetServerParser

__all__ = ["securenetClientParser", "securenetServerParser"]
