"""Fixtures of the contract tests: Mithril's published spec (a skip when
it cannot be downloaded) and the endpoint under contract, the emulator unless
the environment names another (`tests.helpers.contract_target`)."""

import os
from typing import Iterator

import pytest

from tests.helpers import openapi_contract
from tests.helpers.contract_target import (ContractTarget, contract_emulator,
                                           emulator_target, endpoint_from)


def load_contract_or_skip() -> openapi_contract.Contract:
    """The published spec's contract, or a skip saying why it is missing."""
    try:
        return openapi_contract.load_contract()
    except openapi_contract.SpecUnavailable as e:
        pytest.skip(f"Mithril's OpenAPI spec is unavailable: {e}")


@pytest.fixture(scope='session')
def contract() -> openapi_contract.Contract:
    return load_contract_or_skip()


@pytest.fixture(scope='module')
def contract_target() -> Iterator[ContractTarget]:
    """The endpoint the environment names, else a fresh emulator."""
    try:
        endpoint = endpoint_from(os.environ)
    except ValueError as e:
        pytest.fail(str(e), pytrace=False)
    if endpoint is not None:
        yield endpoint
        return
    with contract_emulator() as server:
        yield emulator_target(server, os.environ)
