"""collector-config.yaml and compose.yaml: valid, built from otelcol-contrib components, routed as documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent

# Component types of the otelcol-contrib distribution that a config like ours may name
# (from its builder manifest; a type is the part before "/" in a component id).
CONTRIB = {
    "receivers": {"otlp", "jaeger", "zipkin", "prometheus", "hostmetrics", "filelog", "kafka"},
    "processors": {
        "batch",
        "memory_limiter",
        "filter",
        "attributes",
        "resource",
        "transform",
        "tail_sampling",
        "probabilistic_sampler",
        "routing",
        "k8sattributes",
        "resourcedetection",
        "span",
    },
    "exporters": {"otlp", "otlphttp", "debug", "file", "kafka", "prometheus", "zipkin", "loadbalancing"},
    "extensions": {"health_check", "pprof", "zpages", "file_storage"},
    "connectors": {"forward", "routing", "spanmetrics", "count"},
}


def load(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_collector_config_names_only_contrib_components() -> None:
    config = load("collector-config.yaml")
    for section, known in CONTRIB.items():
        for component in config.get(section) or {}:
            assert component.split("/")[0] in known, f"{section}: {component}"


def test_every_pipeline_uses_defined_components() -> None:
    config = load("collector-config.yaml")
    for name, pipeline in config["service"]["pipelines"].items():
        assert name.split("/")[0] == "traces"
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in config[section], f"{name} uses undefined {component}"
        assert pipeline["processors"][0] == "memory_limiter"
        assert pipeline["processors"][-1] == "batch"


def test_all_spans_go_to_jaeger_and_operation_spans_to_the_gateway() -> None:
    config = load("collector-config.yaml")
    pipelines = config["service"]["pipelines"]
    to_jaeger = [p for p in pipelines.values() if any(e.startswith("otlp/jaeger") for e in p["exporters"])]
    assert len(to_jaeger) == 1
    assert not any(p.startswith("filter") for p in to_jaeger[0]["processors"])  # every span
    to_gateway = [p for p in pipelines.values() if "otlphttp/gateway" in p["exporters"]]
    assert len(to_gateway) == 1
    filters = [p for p in to_gateway[0]["processors"] if p.startswith("filter")]
    assert len(filters) == 1
    conditions = config["processors"][filters[0]]["traces"]["span"]
    assert conditions == ['attributes["gateway.op_type"] == nil']  # drops what is not an operation span
    gateway = config["exporters"]["otlphttp/gateway"]["endpoint"]
    assert gateway.startswith("http://gateway:")  # the compose service; the exporter adds /v1/traces


def test_compose_runs_jaeger_the_collector_and_the_gateway_with_this_config() -> None:
    compose = load("compose.yaml")
    services = compose["services"]
    assert set(services) >= {"jaeger", "otel-collector", "gateway"}
    assert "./collector-config.yaml:/etc/otelcol/config.yaml:ro" in services["otel-collector"]["volumes"]
    assert "gateway-otel gateway" in services["gateway"]["command"]
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
