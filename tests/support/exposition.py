"""Prometheus text exposition, checked as Prometheus would read it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def valid_exposition(text: str) -> list:
    """The metric families of ``text``; fails on two families with one name or two samples of
    one series (Prometheus keeps only one of them, so a sum over the text would mislead)."""
    families = list(text_string_to_metric_families(text))
    names = [family.name for family in families]
    assert len(names) == len(set(names)), f"a metric family appears twice: {sorted(n for n in names if names.count(n) > 1)}"
    series = [(sample.name, tuple(sorted(sample.labels.items()))) for family in families for sample in family.samples]
    repeated = {entry for entry in series if series.count(entry) > 1}
    assert not repeated, f"series exposed twice: {sorted(repeated)[:5]}"
    return families
