# `securenet:` server and client endpoint strings.
from securenet.plugins import securenetClientParser, securenetServerParser

__all__ = ["securenetClientParser", "securenetServerParser"]
