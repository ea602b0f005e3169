"""
Device telemetry: devices publish with their SPIFFE certificates, an
operator subscribes with a password and a second factor.  See
examples/README.md.
"""

from pathlib import Path

#: The example's authorization policy.
POLICY = Path(__file__).with_name("policy.toml")
