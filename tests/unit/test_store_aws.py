"""The store's AWS session: trimmed endpoint data, the same endpoints (store/aws.py)."""

from __future__ import annotations

import aioboto3
import pytest
from botocore.config import Config

from authproxy.store import aws

REGIONS = ["eu-west-1", "us-east-1", "us-gov-west-1", "cn-north-1", "us-iso-east-1", "ap-southeast-7", "xx-new-1"]
VARIANTS = [{}, {"use_fips_endpoint": True}, {"use_dualstack_endpoint": True}]


async def _resolved(session: aioboto3.Session, service: str, region: str, variant: dict) -> tuple:
    async with session.client(service, region_name=region, config=Config(**variant),
                              aws_access_key_id="testing", aws_secret_access_key="testing") as client:
        signer = client._request_signer  # what requests are signed for, next to where they go
        return client.meta.endpoint_url, client.meta.region_name, signer.signing_name, signer.region_name


@pytest.fixture(autouse=True)
def _no_profiles(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("service", ["dynamodb", "sts", "sso", "sso-oidc"])
async def test_the_trimmed_session_resolves_what_botocore_resolves(service):
    trimmed, full = aws.session(), aioboto3.Session()
    compared = 0
    for region in REGIONS:
        for variant in VARIANTS:
            try:
                expected = await _resolved(full, service, region, variant)
            except Exception as error:  # a variant the partition lacks: the trimmed session must refuse it too
                with pytest.raises(type(error)):
                    await _resolved(trimmed, service, region, variant)
                continue
            assert await _resolved(trimmed, service, region, variant) == expected, (service, region, variant)
            compared += 1
    assert compared >= len(REGIONS)


def test_the_endpoint_data_keeps_only_the_services_called():
    resolver = aws.session()._session._get_internal_component("endpoint_resolver")
    partitions = {p["partition"]: set(p["services"]) for p in resolver._endpoint_data["partitions"]}
    assert {"aws", "aws-cn", "aws-us-gov"} <= set(partitions)
    assert partitions["aws"] == set(aws.SERVICES)
    assert all(services <= aws.SERVICES for services in partitions.values())


def test_trimming_keeps_the_partitions_and_their_metadata():
    data = {"version": 3, "partitions": [
        {"partition": "aws", "dnsSuffix": "amazonaws.com", "regions": {"eu-west-1": {}},
         "services": {"dynamodb": {"endpoints": {"eu-west-1": {}}}, "s3": {"endpoints": {}}}},
        {"partition": "aws-cn", "dnsSuffix": "amazonaws.com.cn", "services": {"ec2": {}}},
    ]}
    trimmed = aws.trimmed_endpoints(data)
    assert trimmed["version"] == 3
    assert [p["partition"] for p in trimmed["partitions"]] == ["aws", "aws-cn"]
    assert trimmed["partitions"][0]["services"] == {"dynamodb": {"endpoints": {"eu-west-1": {}}}}
    assert trimmed["partitions"][0]["regions"] == {"eu-west-1": {}}
    assert trimmed["partitions"][1]["services"] == {}
    assert data["partitions"][0]["services"].keys() == {"dynamodb", "s3"}  # the input is not changed
