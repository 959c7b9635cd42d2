"""deploy/: Prometheus configuration, recording rules and alerts (checked and unit-tested
with promtool), the compose stack (checked with docker-compose), the image's Dockerfile,
and the Grafana dashboard: everything they query is a metric the router exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import prometheus_client
import pytest
import yaml

from worker.cli import _parser
from worker.process.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is installed by .ci/run"
)


def run(
    *argv: str, cwd: Path = DEPLOY, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, env=env)


@needs_promtool
def test_promtool_accepts_the_prometheus_configuration() -> None:
    checked = run("promtool", "check", "config", "prometheus.yml", cwd=PROMETHEUS)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_promtool_accepts_the_recording_rules_and_alerts() -> None:
    checked = run("promtool", "check", "rules", "rules.yml", "alerts.yml", cwd=PROMETHEUS)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_every_alert_fires_as_its_unit_tests_say() -> None:
    tested = run("promtool", "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_and_an_entry_in_the_operations_guide() -> None:
    alerts = {rule["alert"] for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
              for rule in group["rules"]}  # fmt: skip
    tested = (PROMETHEUS / "alerts.test.yml").read_text()
    guide = (DEPLOY.parent / "docs" / "operations.md").read_text()
    for alert in alerts:
        assert f"alertname: {alert}" in tested, alert
        assert f"### {alert}" in guide, alert


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is installed by .ci/run")
def test_the_compose_file_is_valid_and_brings_up_the_whole_stack() -> None:
    env = {
        **os.environ,
        "FLASHCALL_CODE_SECRET": "test-only-secret-0123456789",
        "FLASHCALL_REDIS_API_PASSWORD": "test-only-password-0123456789",
        "FLASHCALL_API_KEYS": "test:test-only-key-0123456789abcdefghijklmnop",
    }
    checked = run("docker-compose", "-f", "docker-compose.yml", "config", env=env)
    assert checked.returncode == 0, checked.stderr
    services = set(yaml.safe_load(checked.stdout)["services"])
    assert services == {"redis", "worker", "callbacks", "api", "sandbox", "prometheus", "grafana"}


def compose_service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    return cast(dict[str, Any], services[name])


def test_the_compose_callback_receiver_gets_only_redis_and_log_settings() -> None:
    assert set(compose_service("callbacks")["environment"]) == {"REDIS_URL", "FLASHCALL_LOG_FORMAT"}


def test_the_compose_callback_receiver_listens_on_every_interface_of_its_container() -> None:
    command = compose_service("callbacks")["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - the container's own


def test_the_compose_file_asks_for_the_code_secret_instead_of_holding_one() -> None:
    assert "${FLASHCALL_CODE_SECRET:?" in (DEPLOY / "docker-compose.yml").read_text()


def test_the_compose_api_gets_only_its_own_redis_user_its_keys_and_logs() -> None:
    environment = compose_service("api")["environment"]
    assert set(environment) == {"REDIS_URL", "FLASHCALL_API_KEYS", "FLASHCALL_LOG_FORMAT"}
    assert environment["REDIS_URL"].startswith("redis://flashcall-api:${FLASHCALL_REDIS_API_PASSWORD:?")
    assert environment["FLASHCALL_API_KEYS"].startswith("${FLASHCALL_API_KEYS:?")


def test_the_compose_api_listens_on_its_container_and_is_published_on_loopback_only() -> None:
    api = compose_service("api")
    args = _parser().parse_args(api["command"])
    assert (args.command, args.host, args.port) == ("api", "0.0.0.0", 8800)  # noqa: S104 - the container's own
    assert api["ports"] == [f"127.0.0.1:{args.port}:{args.port}"]


def test_the_compose_api_is_healthy_when_ready_and_starts_once_redis_is() -> None:
    api = compose_service("api")
    port = _parser().parse_args(api["command"]).port
    assert f"http://127.0.0.1:{port}/ready" in " ".join(api["healthcheck"]["test"])
    assert api["depends_on"] == {"redis": {"condition": "service_healthy"}}
    # Redis is healthy once the API's user logs in, which proves its ACL loaded.
    assert "--user flashcall-api" in " ".join(compose_service("redis")["healthcheck"]["test"])


def compose_services() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"])


def probe_url(service: dict[str, Any]) -> str:
    """The URL a service's Python healthcheck opens."""
    found = re.search(r'urlopen\("([^"]+)"', " ".join(service["healthcheck"]["test"]))
    assert found is not None, service["healthcheck"]
    return found.group(1)


def test_the_compose_worker_is_healthy_once_every_process_has_booted_and_redis_answers() -> None:
    test = compose_service("worker")["healthcheck"]["test"]
    assert test[:2] == ["CMD", "flashcall"]
    args = _parser().parse_args(test[2:])
    assert (args.command, args.ready) == ("health", True)


def test_the_compose_callback_receiver_is_healthy_when_it_answers_on_its_port() -> None:
    callbacks = compose_service("callbacks")
    port = _parser().parse_args(callbacks["command"]).port
    assert probe_url(callbacks) == f"http://127.0.0.1:{port}/health"


def test_the_compose_sandbox_is_healthy_when_its_control_api_answers() -> None:
    sandbox = compose_service("sandbox")
    port = _parser().parse_args(sandbox["command"]).port
    assert probe_url(sandbox) == f"http://127.0.0.1:{port}/_sandbox/health"


@pytest.mark.parametrize("name", ["worker", "callbacks", "api"])
def test_the_compose_router_services_start_once_redis_is_healthy(name: str) -> None:
    assert compose_service(name)["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_the_compose_worker_starts_once_the_sandbox_it_calls_is_healthy() -> None:
    assert compose_service("worker")["depends_on"]["sandbox"] == {"condition": "service_healthy"}


def test_every_compose_service_waited_for_until_healthy_has_a_healthcheck() -> None:
    services = compose_services()
    awaited = {
        dependency
        for service in services.values()
        if isinstance(service.get("depends_on"), dict)
        for dependency, condition in service["depends_on"].items()
        if condition.get("condition") == "service_healthy"
    }
    assert awaited
    assert all("healthcheck" in services[name] for name in awaited)


def test_prometheus_scrapes_the_compose_api_on_its_metrics_port() -> None:
    metrics_port = _parser().parse_args(compose_service("api")["command"]).metrics_port
    jobs = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    targets = {target for job in jobs for config in job["static_configs"] for target in config["targets"]}
    assert f"api:{metrics_port}" in targets


def test_the_compose_redis_loads_the_users_file_through_the_script_it_mounts() -> None:
    redis_service = compose_service("redis")
    script = redis_service["entrypoint"][-1]
    mounted = {
        target: DEPLOY / source.removeprefix("./")
        for source, target, *_ in (volume.split(":") for volume in redis_service["volumes"])
        if source.startswith("./")
    }
    (directory,) = [target for target in mounted if script.startswith(target + "/")]
    assert (mounted[directory] / script.removeprefix(directory + "/")) == COMPOSE_USERS
    assert (mounted[directory] / "users.acl").is_file()


COMPOSE_USERS = DEPLOY / "redis" / "compose-users.sh"


def render_compose_users(tmp_path: Path, password: str) -> subprocess.CompletedProcess[str]:
    """Run deploy/redis/compose-users.sh with an entrypoint that only prints what it is given."""
    entrypoint = tmp_path / "bin" / "docker-entrypoint.sh"
    entrypoint.parent.mkdir()
    entrypoint.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    entrypoint.chmod(0o755)
    env = {
        "PATH": f"{entrypoint.parent}:{os.environ['PATH']}",
        "FLASHCALL_ACL_FILE": str(tmp_path / "users.acl"),
        "FLASHCALL_REDIS_API_PASSWORD": password,
    }
    return run("sh", str(COMPOSE_USERS), "redis-server", "--appendonly", "yes", env=env)


def test_the_compose_redis_gets_the_api_user_of_the_users_file_and_an_open_default_user(
    tmp_path: Path,
) -> None:
    started = render_compose_users(tmp_path, "0123abcd")

    assert started.returncode == 0, started.stderr
    acl_file = tmp_path / "users.acl"
    assert started.stdout.split() == ["redis-server", "--appendonly", "yes", "--aclfile", str(acl_file)]
    (api_line,) = [line for line in (DEPLOY / "redis" / "users.acl").read_text().splitlines()
                   if line.startswith("user flashcall-api ")]  # fmt: skip
    assert acl_file.read_text().splitlines() == [
        "user default on nopass ~* &* +@all",
        api_line.replace("${FLASHCALL_REDIS_API_PASSWORD}", "0123abcd"),
    ]
    assert acl_file.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("password", ["", "with space", "a&b", "percent%41"])
def test_the_compose_redis_refuses_a_password_it_cannot_write_into_a_url(
    tmp_path: Path, password: str
) -> None:
    started = render_compose_users(tmp_path, password)
    assert started.returncode != 0
    assert "FLASHCALL_REDIS_API_PASSWORD" in started.stderr
    assert "redis-server" not in started.stdout


def image_stages() -> list[tuple[str, str | None, str]]:
    """deploy/Dockerfile's stages in order: (base, name, instructions), comments left out."""
    dockerfile = re.sub(r"^#.*\n", "", (DEPLOY / "Dockerfile").read_text(), flags=re.MULTILINE)
    stages = []
    for block in re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[1:]:
        head, _, body = block.partition("\n")
        base, _, name = head.partition(" AS ")
        stages.append((base.strip(), name.strip() or None, body))
    return stages


def production_image() -> tuple[str, str]:
    """The default target's base image and the instructions of it and the stages it is built on."""
    stages = image_stages()
    names = {name: (base, body) for base, name, body in stages if name}
    base, _, body = stages[-1]
    bodies = [body]
    while base in names:
        base, parent = names[base]
        bodies.insert(0, parent)
    return base, "".join(bodies)


def test_the_image_runs_as_a_non_root_user_from_a_slim_base() -> None:
    base, instructions = production_image()
    assert base.startswith("python:3.11-slim")
    users = re.findall(r"^USER (\S+)$", instructions, re.MULTILINE)
    assert users
    assert users[-1] not in {"root", "0"}


def test_the_production_image_holds_no_development_tools() -> None:
    _, instructions = production_image()
    assert "flashcall_dev" not in instructions
    assert "flashcall_dev" in {name: body for _, name, body in image_stages()}["dev"]


def test_only_the_compose_sandbox_runs_the_image_with_the_development_tools() -> None:
    services: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    targets = {
        name: service["build"].get("target") for name, service in services.items() if "build" in service
    }
    assert targets == {"worker": None, "callbacks": None, "api": None, "sandbox": "dev"}


def exported_names() -> set[str]:
    registry = prometheus_client.CollectorRegistry()
    Metrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        names |= {family.name, f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_count"}
    recorded = {rule["record"] for group in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
                for rule in group["rules"]}  # fmt: skip
    dramatiq = {
        "dramatiq_messages_total",
        "dramatiq_message_errors_total",
        "dramatiq_messages_inprogress",
        "dramatiq_message_duration_seconds_bucket",
    }
    return names | recorded | dramatiq


def queried_names(text: str) -> set[str]:
    return set(re.findall(r"\b(?:flashcall|dramatiq)[_:][a-z0-9_:]+", text))


DASHBOARD = DEPLOY / "grafana" / "dashboards" / "flashcall.json"


def dashboard() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(DASHBOARD.read_text()))


def values_of(node: Any, key: str) -> list[Any]:
    """Every value held under `key` anywhere in a JSON document."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == key] + [
            found for v in node.values() for found in values_of(v, key)
        ]
    if isinstance(node, list):
        return [found for item in node for found in values_of(item, key)]
    return []


def test_the_dashboard_picks_its_prometheus_from_a_datasource_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_no_panel_target_or_variable_of_the_dashboard_names_a_fixed_datasource() -> None:
    board = dashboard()
    sources = values_of(board["panels"], "datasource") + values_of(board["templating"], "datasource")
    assert sources
    assert all(source == {"type": "prometheus", "uid": "${datasource}"} for source in sources), sources
    # A panel or target without one would read Grafana's default data source, whatever is chosen.
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert all("datasource" in panel for panel in panels)
    assert all("datasource" in target for panel in panels for target in panel["targets"])
    assert set(values_of(board, "uid")) == {board["uid"], "${datasource}"}


def dashboard_queries() -> list[str]:
    """What the dashboard asks Prometheus: its targets' expressions and its variables' queries."""
    board = dashboard()
    variables = [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return values_of(board["panels"], "expr") + [
        query["query"] if isinstance(query, dict) else query for query in variables
    ]


def test_the_dashboard_queries_only_metrics_the_router_exports() -> None:
    queries = dashboard_queries()
    panels = [panel for panel in dashboard()["panels"] if panel["type"] != "row"]
    assert len(queries) >= len(panels)
    assert all(queried_names(query) for query in queries), queries
    assert set().union(*map(queried_names, queries)) <= exported_names()


def test_the_rules_and_alerts_query_only_metrics_the_router_exports() -> None:
    text = (PROMETHEUS / "rules.yml").read_text() + (PROMETHEUS / "alerts.yml").read_text()
    exprs = " ".join(
        re.findall(r"expr: [|]?\s*((?:.|\n)*?)(?:\n\s*(?:for|labels|record|annotations):)", text)
    )
    assert queried_names(exprs) <= exported_names()


@needs_promtool
def test_promtool_parses_every_query_of_the_dashboard(tmp_path: Path) -> None:
    # As Grafana sends them: "All" operator ranges is the variable's allValue.
    operator = {v["name"]: v for v in dashboard()["templating"]["list"]}["operator"]["allValue"]
    rules = [{"record": f"dashboard:query:{n}", "expr": query.replace("$operator", operator)}
             for n, query in enumerate(values_of(dashboard()["panels"], "expr"))]  # fmt: skip
    rule_file = {"groups": [{"name": "dashboard", "rules": rules}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rule_file))
    checked = run("promtool", "check", "rules", "dashboard.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def alert(name: str) -> dict[str, Any]:
    (rule,) = [rule for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
               for rule in group["rules"] if rule.get("alert") == name]  # fmt: skip
    return cast(dict[str, Any], rule)


def keda_scaling() -> tuple[dict[str, Any], dict[str, Any]]:
    """The workers' ScaledObject spec and its prometheus trigger's metadata."""
    (scaled,) = [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "keda.yaml").read_text())
                 if doc["kind"] == "ScaledObject"]  # fmt: skip
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    return scaled["spec"], trigger["metadata"]


def keda_ceiling() -> int:
    """The backlog past which KEDA can add no worker pod: maxReplicaCount x the per-pod target."""
    spec, trigger = keda_scaling()
    return int(spec["maxReplicaCount"]) * int(trigger["threshold"])


def test_the_backlog_alert_reads_the_backlog_of_each_queue_not_the_list_alone() -> None:
    expr = alert("FlashcallQueueBacklog")["expr"]
    assert queried_names(expr) == {"flashcall_backlog"}
    # max: every worker host exports the same figure, read from Redis.
    assert re.match(r"max by \(queue\) \(flashcall_backlog\) > \d+$", expr.strip()), expr


def test_the_backlog_alert_fires_past_what_keda_can_scale_for() -> None:
    expr = alert("FlashcallQueueBacklog")["expr"]
    assert int(expr.rsplit(">", 1)[1]) == keda_ceiling()


@pytest.mark.parametrize(
    "panel_topic",
    [
        "Traffic",
        "Outcomes",
        "Latency",
        "Fallbacks and breakers",
        "Cost and conversion",
        "Queues",
        "Learned routing",
    ],
)
def test_the_dashboard_has_a_row_for(panel_topic: str) -> None:
    assert panel_topic in {panel["title"] for panel in dashboard()["panels"] if panel["type"] == "row"}


def test_the_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert 0 < grid["w"] <= 24 - grid["x"], panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def panel(title: str) -> dict[str, Any]:
    (found,) = [panel for panel in dashboard()["panels"] if panel["title"] == title]
    return cast(dict[str, Any], found)


def dashed_lines(panel: dict[str, Any]) -> list[float]:
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "dashed"
    return [step["value"] for step in defaults["thresholds"]["steps"] if step["value"] is not None]


def test_the_backlog_panel_shows_each_queue_and_where_keda_can_add_no_pod() -> None:
    backlog = panel("Backlog per queue (what KEDA scales on)")
    exprs = [target["expr"] for target in backlog["targets"]]
    assert exprs[0] == "max by (queue) (flashcall_backlog)"
    assert dashed_lines(backlog) == [keda_ceiling()]


def test_the_backlog_panel_asks_for_the_pods_keda_asks_for() -> None:
    spec, trigger = keda_scaling()
    pods = f"clamp(ceil({trigger['query']} / {trigger['threshold']}), "
    pods += f"{spec['minReplicaCount']}, {spec['maxReplicaCount']})"
    assert pods in [target["expr"] for target in panel("Backlog per queue (what KEDA scales on)")["targets"]]


def test_the_learned_routing_row_shows_every_learned_metric() -> None:
    board = dashboard()
    row = [panel["title"] for panel in board["panels"]].index("Learned routing")
    following = board["panels"][row + 1 :]
    learned = following[: next((n for n, p in enumerate(following) if p["type"] == "row"), len(following))]
    names = set().union(*(queried_names(target["expr"]) for p in learned for target in p["targets"]))
    assert {"flashcall_learned_conversion", "flashcall_learned_samples"} <= names
    assert "flashcall_learned_demotions_total" in names


def test_the_samples_panel_marks_the_attempts_an_estimate_needs_to_move_traffic() -> None:
    min_samples = yaml.safe_load((DEPLOY.parent / "routing.yaml").read_text())["learning"]["min_samples"]
    assert dashed_lines(panel("Attempts the estimates rest on")) == [min_samples]


@needs_promtool
def test_the_dashboard_figures_come_out_as_their_descriptions_say(tmp_path: Path) -> None:
    def expr(title: str, n: int = 0) -> str:
        return str(panel(title)["targets"][n]["expr"]).replace('=~"$operator"', '=~".*"')

    figures = {
        "pods": expr("Backlog per queue (what KEDA scales on)", 1),
        "learned": expr("Learned conversion by provider and channel"),
        "share": expr("Share of each channel's attempts by provider"),
        "cost": expr("Roubles per approval at the learned conversion"),
    }
    rules = [{"record": f"figure:{name}", "expr": text} for name, text in figures.items()]
    (tmp_path / "figures.yml").write_text(yaml.safe_dump({"groups": [{"name": "figures", "rules": rules}]}))
    vp = 'provider="vp",channel="flashcall"'
    series = {
        # Two worker hosts export the same backlog and the same estimates: counted once.
        'flashcall_backlog{queue="verifications",instance="a"}': "700x20",
        'flashcall_backlog{queue="verifications",instance="b"}': "700x20",
        f'flashcall_learned_conversion{{{vp},operator="mts",instance="a"}}': "0.5x20",
        f'flashcall_learned_conversion{{{vp},operator="mts",instance="b"}}': "0.5x20",
        f'flashcall_learned_samples{{{vp},operator="mts",instance="a"}}': "30x20",
        f'flashcall_learned_samples{{{vp},operator="mts",instance="b"}}': "30x20",
        f'flashcall_learned_conversion{{{vp},operator="megafon"}}': "0.9x20",
        f'flashcall_learned_samples{{{vp},operator="megafon"}}': "10x20",
        f'flashcall_provider_requests_total{{{vp},outcome="delivered"}}': "0+60x20",
        f'flashcall_provider_requests_total{{{vp},outcome="timeout"}}': "0+20x20",
        'flashcall_provider_requests_total{provider="mg",channel="flashcall",outcome="delivered"}': "0+20x20",
        'flashcall_provider_requests_total{provider="mg",channel="sms",outcome="delivered"}': "0+5x20",
        f"flashcall_cost_roubles_total{{{vp}}}": "0+90x20",
    }
    expected: dict[str, list[tuple[str, float]]] = {
        "pods": [("", 4)],  # ceil(700 / 200)
        "learned": [(vp, 0.6)],  # (0.5 x 30 + 0.9 x 10) / 40: the rate over every range
        "share": [(vp, 0.8), ('provider="mg",channel="flashcall"', 0.2), ('provider="mg",channel="sms"', 1)],
        "cost": [(vp, 2.5)],  # 1.5 roubles per delivered call / 0.6
    }
    tests = {
        "rule_files": ["figures.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": name, "values": values} for name, values in series.items()],
            "promql_expr_test": [
                {"expr": f"round(figure:{name}, 0.001)", "eval_time": "16m",
                 "exp_samples": [{"labels": f"{{{labels}}}", "value": value} for labels, value in samples]}
                for name, samples in expected.items()
            ],
        }],
    }  # fmt: skip
    (tmp_path / "figures.test.yml").write_text(yaml.safe_dump(tests))
    tested = run("promtool", "test", "rules", "figures.test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_operations_guide_lists_every_metric_the_workers_export_under_its_exposed_name() -> None:
    """So that what the dashboard and alerts may query (exported_names) is what operators read of."""
    guide = (DEPLOY.parent / "docs" / "operations.md").read_text()
    section = guide[guide.index("\n## Metrics\n") : guide.index("\n## Health checks\n")]
    listed = set(re.findall(r"^\| `(flashcall_[a-z0-9_]+)` \|", section, re.MULTILINE))
    registry = prometheus_client.CollectorRegistry()
    Metrics(registry)
    exposed = {family.name + ("_total" if family.type == "counter" else "") for family in registry.collect()}
    assert listed == exposed
