"""The AWS SDK session the DynamoDB store's client comes from, with only the endpoint data it uses.

botocore resolves a client's region and signing scope from ``endpoints.json``, which
describes every AWS service in every partition. Parsed (into OrderedDicts), it holds about
6.5 MiB in every worker for as long as the process runs, against issue 15's budget of
100 MiB per worker with 10,000 cached sessions. The same file with each partition's
``services`` cut down to the ones this process calls resolves those exactly as before:
DynamoDB, and STS and IAM Identity Center for the credentials chain (web identity, assumed
roles, SSO profiles). It is the file botocore itself would read (its data path, so a
customer ``endpoints.json`` under AWS_DATA_PATH or ~/.aws/models still wins), read once
here by a loader of its own, trimmed, and dropped.

The resolver is registered the way botocore's Session registers its own, through
``_internal_components``: botocore has no public hook for it. Without that attribute (a
botocore that moved it), the session is left as botocore builds it.
``tests/unit/test_store_aws.py`` compares the endpoints resolved either way.
"""

from __future__ import annotations

from typing import Any

import aioboto3
from aiobotocore.session import AioSession
from botocore.loaders import create_loader
from botocore.regions import EndpointResolver

# endpoints.json service keys (their endpoint prefixes)
SERVICES = frozenset({"dynamodb", "sts", "sso", "oidc", "portal.sso"})


def trimmed_endpoints(data: dict[str, Any], services: frozenset[str] = SERVICES) -> dict[str, Any]:
    """``endpoints.json`` with each partition's ``services`` cut to ``services``."""
    return {**data, "partitions": [
        {**partition, "services": {name: entry for name, entry in partition.get("services", {}).items() if name in services}}
        for partition in data.get("partitions", [])
    ]}


def session() -> aioboto3.Session:
    """An aioboto3 session whose endpoint resolver knows only ``SERVICES``."""
    botocore_session = AioSession()
    components = getattr(botocore_session, "_internal_components", None)
    if components is not None:
        # What botocore's Session does (session.py, create_default_resolver), with a loader of
        # its own: the session's loader would keep the whole file in its cache.
        loader = create_loader(botocore_session.get_config_variable("data_path"))
        endpoints, path = loader.load_data_with_path("endpoints")
        # uses_builtin_data: with botocore's own data the endpoint rulesets decide (botocore/args.py)
        components.register_component("endpoint_resolver", EndpointResolver(
            trimmed_endpoints(endpoints), uses_builtin_data=loader.is_builtin_path(path)))
    return aioboto3.Session(botocore_session=botocore_session)
