"""Gateway configuration: the upstreams YAML, settings validation, client tokens; secrets never shown."""

from __future__ import annotations

import textwrap

import pytest

from finerouter.errors import FineRouterError, ParameterError
from finerouter.serving.config import (
    GatewaySettings,
    load_auth_tokens,
    load_gateway_config,
    parse_gateway_config,
)
from finerouter.serving.errors import ConfigError

SECRET = "sk-very-secret-value-123"


def _write(tmp_path, text: str):
    path = tmp_path / "upstreams.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_full_file_is_read_with_defaults(tmp_path):
    path = _write(
        tmp_path,
        """
        upstreams:
          model-a:
            base_url: http://127.0.0.1:9001/v1
            model: org/model-a-instruct
            api_key_env: UPSTREAM_KEY_A
            timeout_s: 12
            headers: {X-Team: routing}
          model-b:
            base_url: https://example.org/v1/
        gateway:
          max_attempts: 2
          cooldown_s: 5
          route_on: user
        """,
    )
    cfg = load_gateway_config(path, environ={"UPSTREAM_KEY_A": SECRET})
    a, b = cfg.upstreams["model-a"], cfg.upstreams["model-b"]
    assert a.model == "org/model-a-instruct" and a.api_key == SECRET and a.timeout_s == 12.0
    assert a.connect_timeout_s == 5.0 and a.headers == {"X-Team": "routing"}
    assert a.chat_url == "http://127.0.0.1:9001/v1/chat/completions"
    assert b.model == "model-b" and b.api_key is None and b.timeout_s == 30.0
    assert b.chat_url == "https://example.org/v1/chat/completions"
    assert cfg.settings.max_attempts == 2 and cfg.settings.cooldown_s == 5.0 and cfg.settings.route_on == "user"
    assert cfg.source == str(path)
    # The key is held but never shown.
    assert SECRET not in repr(a) and SECRET not in repr(cfg)


def test_unset_key_variable_is_a_startup_error_naming_it(tmp_path):
    path = _write(
        tmp_path,
        """
        upstreams:
          model-a: {base_url: "http://127.0.0.1:9001/v1", api_key_env: UPSTREAM_KEY_A}
        """,
    )
    with pytest.raises(ConfigError, match=r"upstreams\.model-a\.api_key_env.*UPSTREAM_KEY_A is not set") as err:
        load_gateway_config(path, environ={})
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="UPSTREAM_KEY_A"):
        load_gateway_config(path, environ={"UPSTREAM_KEY_A": ""})


def test_router_model_without_upstream_is_named():
    cfg = parse_gateway_config({"upstreams": {"model-a": {"base_url": "http://127.0.0.1:1/v1"}}}, source="ups.yaml")
    cfg.check_covers(["model-a"])
    with pytest.raises(ConfigError, match=r"ups\.yaml: the router's model\(s\) 'model-b', 'model-c' have no upstream"):
        cfg.check_covers(["model-a", "model-b", "model-c"])


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ({"upstreams": {"a": {"base_url": "ftp://x/v1"}}}, r"upstreams\.a\.base_url: must be an http\(s\) URL"),
        ({"upstreams": {"a": {"base_url": "http:///v1"}}}, r"upstreams\.a\.base_url"),
        ({"upstreams": {"a": {}}}, r"upstreams\.a\.base_url: is required"),
        ({"upstreams": {"a": {"base_url": "http://h/v1", "timeout_s": 0}}}, r"upstreams\.a\.timeout_s: must be a positive"),
        ({"upstreams": {"a": {"base_url": "http://h/v1", "timeout_s": "10"}}}, r"timeout_s"),
        ({"upstreams": {"a": {"base_url": "http://h/v1", "modle": "x"}}}, r"unknown key\(s\) 'modle'"),
        ({"upstreams": {"a": {"base_url": "http://h/v1", "headers": {"Authorization": "x"}}}}, r"must not set Authorization"),
        ({"upstreams": {"a": "http://h/v1"}}, r"upstreams\.a: must be a mapping"),
        ({"upstreams": {}}, r"'upstreams:' is required"),
        ({"upstream": {"a": {"base_url": "http://h/v1"}}}, r"unknown top-level key\(s\) 'upstream'"),
        ({"upstreams": {"a": {"base_url": "http://h/v1"}}, "gateway": {"retries": 3}}, r"gateway: unknown key\(s\) 'retries'"),
        (
            {"upstreams": {"a": {"base_url": "http://h/v1"}}, "gateway": {"max_attempts": 0}},
            r"The 'max_attempts' parameter of GatewaySettings must be an int in \[1, inf\)\. Got 0\.",
        ),
        ({"upstreams": {"finerouter": {"base_url": "http://h/v1"}}}, r"clashes with the routing alias"),
        (["not", "a", "mapping"], r"must be a mapping"),
    ],
)
def test_malformed_config_is_a_clear_error(raw, pattern):
    with pytest.raises(ConfigError, match=pattern) as err:
        parse_gateway_config(raw, source="ups.yaml", environ={})
    assert str(err.value).startswith("ups.yaml")
    assert isinstance(err.value, FineRouterError)


def test_unreadable_or_invalid_yaml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the upstreams file"):
        load_gateway_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_gateway_config(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cooldown_s": -1.0}, r"The 'cooldown_s' parameter of GatewaySettings must be a float in \[0, inf\)"),
        ({"route_on": "first"}, r"The 'route_on' parameter of GatewaySettings must be one of"),
        ({"default_tolerance": 2.0}, r"'default_tolerance' parameter of GatewaySettings must be a float in \[0, 1\]"),
        ({"affinity_ttl_s": 0.0}, r"'affinity_ttl_s' parameter of GatewaySettings must be a float in \(0, inf\)"),
        ({"alias": "a:b"}, r"'alias' parameter of GatewaySettings must be a non-empty str without ':'"),
        ({"route_switch_interval_ms": 0}, r"'route_switch_interval_ms' parameter of GatewaySettings must be a float in \(0, inf\)"),
    ],
)
def test_settings_validation_messages(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        GatewaySettings(**kwargs)


def test_auth_tokens_from_file_and_env(tmp_path):
    f = tmp_path / "tokens.txt"
    f.write_text("# clients\ntoken-one\n\n  token-two  \n")
    assert load_auth_tokens(f) == {"token-one", "token-two"}
    assert load_auth_tokens(env_var="GW_TOKENS", environ={"GW_TOKENS": "a, b,,c"}) == {"a", "b", "c"}
    assert load_auth_tokens(f, "GW_TOKENS", environ={"GW_TOKENS": "x"}) == {"token-one", "token-two", "x"}
    assert load_auth_tokens() == frozenset()


def test_auth_tokens_given_but_empty_is_an_error(tmp_path):
    f = tmp_path / "tokens.txt"
    f.write_text("# nothing here\n\n")
    with pytest.raises(ConfigError, match="holds no token"):
        load_auth_tokens(f)
    with pytest.raises(ConfigError, match="GW_TOKENS"):
        load_auth_tokens(env_var="GW_TOKENS", environ={})
    with pytest.raises(ConfigError, match="cannot read the token file"):
        load_auth_tokens(tmp_path / "absent.txt")


def test_named_client_keys_with_default_budgets():
    ups = {"a": {"base_url": "http://h/v1"}}
    env = {"TEAM_A": SECRET, "TEAM_B": "tok-b-123456"}
    cfg = parse_gateway_config(
        {"upstreams": ups, "keys": {"team-a": {"token_env": "TEAM_A", "budget_per_1k": 2.5}, "b": {"token_env": "TEAM_B"}},
         "gateway": {"budget_window_requests": 200, "budget_window_s": 600}},
        source="ups.yaml", environ=env,
    )
    assert cfg.keys["team-a"].budget_per_1k == 2.5 and cfg.keys["b"].budget_per_1k is None
    assert cfg.keys["team-a"].token == SECRET and SECRET not in repr(cfg)
    assert (cfg.settings.budget_window_requests, cfg.settings.budget_window_s) == (200, 600)
    assert parse_gateway_config({"upstreams": ups}, environ={}).keys == {}


@pytest.mark.parametrize(
    ("keys", "pattern"),
    [
        ({"team": {"token_env": "UNSET_VAR"}}, r"keys\.team\.token_env: the environment variable UNSET_VAR is not set"),
        ({"team": {}}, r"keys\.team\.token_env: is required"),
        ({"team": {"token_env": "T1", "budget": 1}}, r"keys\.team: unknown key\(s\) 'budget'"),
        ({"team": {"token_env": "T1", "budget_per_1k": -1}}, r"keys\.team\.budget_per_1k: must be a number >= 0"),
        ({"team": {"token_env": "T1", "budget_per_1k": "2"}}, r"keys\.team\.budget_per_1k"),
        ({"anonymous": {"token_env": "T1"}}, r"keys: key names must be"),
        ({"a b": {"token_env": "T1"}}, r"keys: key names must be"),
        ({"x": {"token_env": "T1"}, "y": {"token_env": "T2"}}, r"keys\.y\.token_env: the token in T2 is also the token of keys\.x"),
        ({"x": {"token_env": "SPACED"}}, r"must not contain whitespace"),
        (["team"], r"keys: must map key names"),
    ],
)
def test_malformed_client_keys_are_clear_errors(keys, pattern):
    env = {"T1": SECRET, "T2": SECRET, "SPACED": "a b"}
    with pytest.raises(ConfigError, match=pattern) as err:
        parse_gateway_config({"upstreams": {"a": {"base_url": "http://h/v1"}}, "keys": keys}, source="ups.yaml", environ=env)
    assert str(err.value).startswith("ups.yaml") and SECRET not in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget_window_requests": 0}, r"'budget_window_requests' parameter of GatewaySettings must be an int in \[1, inf\)"),
        ({"budget_window_s": 0.0}, r"'budget_window_s' parameter of GatewaySettings must be a float in \(0, inf\)"),
        ({"budget_max_windows": 0}, r"'budget_max_windows' parameter of GatewaySettings must be an int in \[1, inf\)"),
    ],
)
def test_budget_settings_validation(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        GatewaySettings(**kwargs)
