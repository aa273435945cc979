"""Request statistics and the supervisor's sum of worker snapshots."""

from prometheus_client.parser import text_string_to_metric_families

from authproxy.metrics import RequestStats, RequestStatsCollector, aggregate


def samples(text):
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def exposition_of(stats):
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(RequestStatsCollector(stats))
    return generate_latest(registry).decode()


def test_request_stats_exposition():
    stats = RequestStats()
    stats.request("api", "GET", 200, 0.0004)
    stats.request("api", "GET", 200, 0.02)
    stats.request("api", "BREW", 418, 50.0)  # unknown method, beyond the last bucket
    stats.upstream("api", 0.003)
    stats.in_flight = 3
    found = samples(exposition_of(stats))
    assert found[("authproxy_requests_total", (("code", "200"), ("method", "GET"), ("route", "api")))] == 2
    assert found[("authproxy_requests_total", (("code", "418"), ("method", "OTHER"), ("route", "api")))] == 1
    bucket = "authproxy_request_duration_seconds_bucket"
    assert found[(bucket, (("le", "0.0005"), ("route", "api")))] == 1
    assert found[(bucket, (("le", "0.025"), ("route", "api")))] == 2
    assert found[(bucket, (("le", "30.0"), ("route", "api")))] == 2
    assert found[(bucket, (("le", "+Inf"), ("route", "api")))] == 3
    assert found[("authproxy_request_duration_seconds_count", (("route", "api"),))] == 3
    assert abs(found[("authproxy_request_duration_seconds_sum", (("route", "api"),))] - 50.0204) < 1e-9
    assert found[("authproxy_upstream_duration_seconds_count", (("route", "api"),))] == 1
    assert found[("authproxy_requests_in_flight", ())] == 3


def test_aggregate_sums_counters_over_all_and_gauges_over_live_workers():
    worker = """# HELP authproxy_requests_total Requests.
# TYPE authproxy_requests_total counter
authproxy_requests_total{route="a"} %d
# HELP authproxy_requests_in_flight In flight.
# TYPE authproxy_requests_in_flight gauge
authproxy_requests_in_flight %d
# HELP authproxy_ready Ready.
# TYPE authproxy_ready gauge
authproxy_ready %d
# HELP python_info Python.
# TYPE python_info gauge
python_info{version="3.11"} 1
"""
    total = samples(aggregate([(worker % (5, 2, 1), True), (worker % (7, 4, 0), True), (worker % (100, 9, 0), False)]).decode())
    assert total[("authproxy_requests_total", (("route", "a"),))] == 112  # a dead worker's count still counts
    assert total[("authproxy_requests_in_flight", ())] == 6  # live workers only
    assert total[("authproxy_ready", ())] == 0  # the least ready live worker
    assert total[("python_info", (("version", "3.11"),))] == 1
