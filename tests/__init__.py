"""The test suite, in tiers: unit/, integration/, e2e/, host/ (see conftest.py).
A package, so its modules and helpers are imported by full name
(`tests.helpers.provisioning`) and two tiers may hold files of the same name."""
