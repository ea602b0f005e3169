"""
A multi-user chat over mutual TLS: who you are comes from your client
certificate, what you may do from examples/chat/policy.toml.  See
examples/README.md.
"""

from pathlib import Path

#: The example's authorization policy.
POLICY = Path(__file__).with_name("policy.toml")
