"""
Tests of the credential database (L{securenet.store}): the backend
conformance suite every store must pass (L{tests.store.test_conformance}),
and what only one backend promises.
"""
