"""Program config: YAML into frozen, validated dataclasses; errors name the key."""

from __future__ import annotations

import dataclasses

import pytest

from experiments.config import (ConfigError, Dataset, ProgramConfig, flatten, load_config, parse_config)
from loop.exceptions import SchemaError
from loop.gate import QualityGate
from loop.routing import RoutingThresholds
from loop.strategies import Strategy

FULL = """
program:
  name: team-a
  dataset: digits
  rounds: 3
  items_per_round: 120
  budget_per_round: 9.5
  strategy: cleanlab
  audit_rate: 0.05
  annotator_model: dawid_skene
  seed: 4
crowd:
  tiers: {novice: 8, experienced: 2, expert: 2}
thresholds:
  auto_accept_confidence: 0.95
  expert_margin: 0.2
gate:
  min_accuracy_gain: 0.01
tracking:
  uri: sqlite:///runs.db
  registered_model: digits-model
store:
  url: sqlite:///labels.db
serve:
  url: http://127.0.0.1:8000
compare:
  strategies: [random, tiered]
"""


def test_yaml_is_read_into_frozen_dataclasses(tmp_path):
    path = tmp_path / "program.yaml"
    path.write_text(FULL)
    cfg = load_config(path)
    assert (cfg.name, cfg.dataset, cfg.rounds, cfg.items_per_round, cfg.budget_per_round) == \
        ("team-a", Dataset.DIGITS, 3, 120, 9.5)
    assert cfg.strategy is Strategy.CLEANLAB and cfg.annotator_model == "dawid_skene"
    assert cfg.crowd.tiers == {"novice": 8, "experienced": 2, "expert": 2}
    assert cfg.thresholds.auto_accept_confidence == 0.95 and cfg.thresholds.expert_margin == 0.2
    # Keys not given keep the program's defaults, not the library's.
    assert cfg.thresholds.double_blind_issue_score == ProgramConfig().thresholds.double_blind_issue_score
    assert cfg.gate.min_accuracy_gain == 0.01 and cfg.gate.max_ece == ProgramConfig().gate.max_ece
    assert (cfg.tracking.uri, cfg.tracking.registered_model, cfg.store_url, cfg.serve) == \
        ("sqlite:///runs.db", "digits-model", "sqlite:///labels.db", "http://127.0.0.1:8000")
    assert cfg.strategies == (Strategy.RANDOM, Strategy.TIERED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rounds = 5


def test_round_trip_through_to_dict():
    cfg = load_config_text(FULL)
    assert parse_config(cfg.to_dict()) == cfg


def load_config_text(text):
    import yaml

    return parse_config(yaml.safe_load(text))


def test_defaults_from_an_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    cfg = load_config(path)
    assert cfg == ProgramConfig()
    assert isinstance(cfg.thresholds, RoutingThresholds) and isinstance(cfg.gate, QualityGate)
    assert cfg.tracking.uri == "sqlite:///mlflow.db" and cfg.store_url == "sqlite:///labelloop.db"


@pytest.mark.parametrize("raw, message", [
    ({"program": {"rounds": "x"}}, "program.rounds: expected an integer >= 1, got 'x'"),
    ({"program": {"rounds": 0}}, "program.rounds: expected an integer >= 1, got 0"),
    ({"program": {"rounds": True}}, "program.rounds: expected an integer >= 1, got True"),
    ({"program": {"budget_per_round": -1}}, "program.budget_per_round: expected a number >= 0.0, got -1"),
    ({"program": {"audit_rate": 1.5}}, "program.audit_rate: expected a number >= 0.0 and <= 1.0, got 1.5"),
    ({"program": {"strategy": "magic"}}, "program.strategy: expected one of ['random', 'least_confidence', "
                                         "'cleanlab', 'triple_majority', 'tiered'], got 'magic'"),
    ({"program": {"dataset": "mnist"}}, "program.dataset: expected one of ['digits', 'music_genre'], got 'mnist'"),
    ({"program": {"round": 3}}, "program.round: unknown key; expected one of"),
    ({"program": {"annotator_model": "glad"}},
     "program.annotator_model: expected one of ['one_coin', 'dawid_skene'], got 'glad'"),
    ({"program": {"max_fit_items": 10}}, "program.max_fit_items: expected an integer >= 100, got 10"),
    ({"program": {"deferred_accept_confidence": 1.2}},
     "program.deferred_accept_confidence: expected a number >= 0.0 and <= 1.0, got 1.2"),
    ({"program": {"deferred_accept_confidence": 0}},
     "program.deferred_accept_confidence: expected a probability in (0, 1] or null, got 0"),
    ({"program": {"currency": ""}}, "program.currency: expected a non-empty one-line string"),
    ({"program": {"currency": 5}}, "program.currency: expected a non-empty one-line string of at most 40 "
                                   "characters, got 5"),
    ({"program": {"currency": "EUR\nUSD"}}, "program.currency: expected a non-empty one-line string"),
    ({"program": {"value_per_error_removed": -1}},
     "program.value_per_error_removed: expected a number >= 0.0, got -1"),
    ({"program": {"value_per_error_removed": "ten"}},
     "program.value_per_error_removed: expected a number >= 0.0, got 'ten'"),
    ({"programme": {}}, "programme: unknown section"),
    ({"crowd": {"tiers": {"wizard": 3}}}, "crowd.tiers.wizard: expected one of ['novice', 'experienced', 'expert']"),
    ({"crowd": {"tiers": {"novice": 5, "expert": 0}}}, "crowd.tiers.expert: expected an integer >= 1"),
    ({"crowd": {"tiers": {"novice": 2, "expert": 1}}}, "crowd.tiers: expected at least 3 non-expert annotators"),
    ({"crowd": {"tiers": "replay"}}, "crowd.tiers: expected tier counts for digits"),
    ({"thresholds": {"auto_accept": 0.9}}, "thresholds: The 'config' argument must be a mapping with keys among"),
    ({"thresholds": {"expert_margin": 2}}, "thresholds: The 'expert_margin' argument must be a number in [0, 1]"),
    ({"gate": {"max_ece": "low"}}, "gate: The 'max_ece' argument must be a finite real number"),
    ({"serve": {"url": "ray://x"}}, "serve.url: expected 'in_process', 'local' or an http(s):// URL, got 'ray://x'"),
    ({"compare": {"strategies": []}}, "compare.strategies: expected a non-empty list of distinct strategies"),
    ({"compare": {"strategies": ["random", "random"]}}, "compare.strategies: expected a non-empty list of distinct"),
    ({"compare": {"strategies": ["tiered", "best"]}}, "compare.strategies[1]: expected one of"),
    ({"tracking": {"uri": ""}}, "tracking.uri: expected a non-empty string, got ''"),
    ({"program": []}, "program: expected a mapping, got []"),
])
def test_a_wrong_key_or_value_is_named(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, SchemaError)


def test_extra_sections_can_be_allowed_for_other_commands():
    with pytest.raises(ConfigError, match="tune: unknown section"):
        parse_config({"tune": {"trials": 3}})
    assert parse_config({"tune": {"trials": 3}}, ignore=("tune",)) == ProgramConfig()


def test_file_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("program: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="config: expected a mapping of sections"):
        load_config(listed)


def test_replace_validates_again():
    cfg = ProgramConfig()
    assert cfg.replace(strategy="random").strategy is Strategy.RANDOM
    with pytest.raises(ConfigError, match="program.items_per_round"):
        cfg.replace(items_per_round=3)


def test_flatten_gives_every_field_as_text():
    flat = flatten(ProgramConfig())
    assert flat["program.rounds"] == "4"
    assert flat["thresholds.auto_accept_confidence"] == "0.9"
    assert flat["crowd.tiers.novice"] == "12"
    assert flat["gate.max_ece"] == "0.15"
    assert all(isinstance(v, str) for v in flat.values())
    assert all(len(k) < 250 for k in flat)


# --- a team's own table and model ------------------------------------------------------------


def test_table_dataset_parses_and_round_trips():
    from experiments.config import TableDataset

    cfg = parse_config({"program": {"dataset": {"path": "data/items.parquet", "features": ["f0", "f1"],
                                                "gold": "gold", "classes": ["cat", "dog"]},
                                    "annotations": "answers.csv"},
                        "model": {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
                                  "params": {"max_iter": 50}}})
    assert isinstance(cfg.dataset, TableDataset) and cfg.table is cfg.dataset
    assert cfg.dataset.value == "items" and cfg.dataset.features == ("f0", "f1")
    assert cfg.model.params == {"max_iter": 50} and cfg.model.allow_pickle is False
    assert parse_config(cfg.to_dict()) == cfg
    assert parse_config({}).table is None


@pytest.mark.parametrize(("raw", "message"), [
    ({"program": {"dataset": {"path": "items.txt"}}}, "program.dataset.path: expected a .csv or .parquet file"),
    ({"program": {"dataset": {"id": "x"}}}, "program.dataset.path: expected the table's file"),
    ({"program": {"dataset": {"path": "a.csv", "colour": 1}}}, "program.dataset.colour: unknown key"),
    ({"program": {"dataset": {"path": "a.csv", "features": "f0"}}}, "program.dataset.features: expected a list"),
    ({"program": {"dataset": {"path": "a.csv", "classes": ["a", "a"]}}}, "program.dataset.classes: expected a non-empty"),
    ({"program": {"dataset": {"path": "a.csv", "gold": "label"}}}, "program.dataset: expected distinct id, label"),
    ({"program": {"dataset": {"path": "a.csv", "features": ["item_id"]}}}, "program.dataset.features: expected columns"),
    ({"program": {"annotations": "answers.csv"}}, "program.annotations: expected no value with a built-in"),
    ({"model": {"params": [1]}}, "model.params: expected a mapping"),
    ({"model": {"allow_pickle": "yes"}}, "model.allow_pickle: expected true or false"),
    ({"model": {"flavour": "x"}}, "model.flavour: unknown key"),
])
def test_table_and_model_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert str(info.value).startswith(message), str(info.value)
def test_seed_and_the_auto_accept_bound_come_from_the_config():
    cfg = parse_config({"program": {"seed": 7}, "thresholds": {"max_auto_accept_error": 0.02}})
    assert cfg.seed == 7 and cfg.thresholds.max_auto_accept_error == 0.02
    # Keys not given keep the program's defaults; the bound is off unless set.
    assert cfg.thresholds.auto_accept_confidence == ProgramConfig().thresholds.auto_accept_confidence
    assert ProgramConfig().thresholds.max_auto_accept_error is None
    assert parse_config(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="max_auto_accept_error"):
        parse_config({"thresholds": {"max_auto_accept_error": 1.5}})


def test_costs_have_a_unit_and_errors_removed_an_optional_value():
    cfg = ProgramConfig()
    assert (cfg.currency, cfg.value_per_error_removed) == ("cost units", None)
    cfg = parse_config({"program": {"currency": "EUR", "value_per_error_removed": 12}})
    assert (cfg.currency, cfg.value_per_error_removed) == ("EUR", 12.0)
    assert parse_config(cfg.to_dict()) == cfg
    assert flatten(cfg)["program.currency"] == "EUR" and flatten(cfg)["program.value_per_error_removed"] == "12.0"
