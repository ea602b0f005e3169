"""
A key-value RPC service over AMP: commands declare the permission they
need, examples/kv/policy.toml says who has it.  See examples/README.md.
"""

from pathlib import Path

#: The example's authorization policy.
POLICY = Path(__file__).with_name("policy.toml")
