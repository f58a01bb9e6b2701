"""The program's ports and their adapters: the simulated world is one Dataset and one
Workforce among others, and the loop runs the same with any adapter behind a port."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import tracking as T
from experiments.config import parse_config
from experiments.models import make_estimator
from experiments.ports import (CalibratedTrainer, Dataset, Request, SimulatedWorkforce, Trainer, Workforce,
                               WorldDataset)
from experiments.program import run_program
from experiments.world import build_world
from loop.columns import ANNOTATOR, ITEM
from loop.exceptions import LoopError

SMALL = {"program": {"rounds": 1, "items_per_round": 80, "budget_per_round": 5.0, "calibration_items": 60,
                     "holdout_items": 150, "audit_rate": 0.05},
         "tracking": {"uri": "none"}, "store": {"url": "sqlite://"}}


@pytest.fixture(scope="module")
def cfg():
    return parse_config(SMALL)


@pytest.fixture(scope="module")
def world(cfg):
    return build_world(cfg)


def test_the_world_adapters_implement_the_ports(cfg, world) -> None:
    dataset = WorldDataset(world)
    assert isinstance(dataset, Dataset)
    assert isinstance(SimulatedWorkforce(world), Workforce)
    trainer = CalibratedTrainer(dataset, estimator=make_estimator, seed=cfg.seed)
    assert isinstance(trainer, Trainer)


def test_a_dataset_says_what_arrives_when(world) -> None:
    dataset = WorldDataset(world)
    assert dataset.name == world.dataset and dataset.truth is world.truth
    two = np.concatenate([dataset.arrivals(0), dataset.arrivals(1)])
    assert (dataset.arrived(1) == two).all() and len(two) == 160
    assert dataset.x(two[:3]).shape == (3, world.features.shape[1])


def test_the_simulated_workforce_answers_at_once_what_the_world_would(world) -> None:
    items = world.stream[:10]
    workforce = SimulatedWorkforce(world)
    crowd = workforce.submit(Request(items, labels_per_item=2), rng=np.random.default_rng(3))
    experts = workforce.submit(Request(items[:4], expert=True), rng=np.random.default_rng(4))
    answers = workforce.collect(crowd)
    expected = world.workforce.ask_crowd(world.truth[items], 2, exclude=None, rng=np.random.default_rng(3))
    pd.testing.assert_frame_equal(answers, expected)
    assert answers.groupby(ITEM)[ANNOTATOR].nunique().eq(2).all()
    by_experts = workforce.collect(experts)
    assert len(by_experts) == 4 and set(by_experts[ANNOTATOR]) <= set(
        world.workforce.annotators.query("tier == 'expert'")[ANNOTATOR])
    assert workforce.collect(crowd) is None  # collected once


def test_the_trainer_gives_a_calibrated_model_and_out_of_fold_probabilities(cfg, world) -> None:
    dataset = WorldDataset(world)
    labels = world.initial.set_index(ITEM)["label"].iloc[:120].sort_index()
    trained = CalibratedTrainer(dataset, estimator=make_estimator, seed=cfg.seed, max_fit_items=100).train(labels)
    assert trained.out_of_fold.shape == (100, len(world.classes))  # a sample of max_fit_items
    assert set(trained.out_of_fold.index) <= set(labels.index)
    np.testing.assert_allclose(trained.out_of_fold.sum(axis=1), 1.0)
    assert 0.0 <= trained.evaluation.accuracy <= 1.0
    assert trained.model.predict_proba(dataset.x(labels.index[:5])).shape == (5, len(world.classes))


class _Recording:
    """A workforce adapter around another: what a team's adapter would look like to the loop."""

    def __init__(self, inner: SimulatedWorkforce) -> None:
        self.inner, self.requests = inner, []
        self.annotators, self.costs = inner.annotators, inner.costs

    def submit(self, request, *, rng):
        self.requests.append(request)
        return self.inner.submit(request, rng=rng)

    def collect(self, ticket):
        return self.inner.collect(ticket)


def test_the_loop_runs_the_same_with_another_workforce_adapter(cfg, world) -> None:
    plain = run_program(cfg.replace(strategy="random"), world=world, tracker=T.MemoryTracker())
    recording = _Recording(SimulatedWorkforce(world))
    wrapped = run_program(cfg.replace(strategy="random"), world=world, tracker=T.MemoryTracker(), workforce=recording)
    pd.testing.assert_frame_equal(plain.rounds, wrapped.rounds, check_exact=True)
    assert any(r.expert for r in recording.requests) and any(not r.expert for r in recording.requests)


def test_tiered_asks_for_its_crowd_work_by_the_estimated_skills(cfg, world) -> None:
    def crowd_requests(strategy: str) -> list[Request]:
        recording = _Recording(SimulatedWorkforce(world))
        run_program(cfg.replace(strategy=strategy), world=world, tracker=T.MemoryTracker(), workforce=recording)
        return [r for r in recording.requests if not r.expert]

    tiered = crowd_requests("tiered")
    assert tiered and all(isinstance(r.prefer, pd.Series) for r in tiered)
    crowd = set(world.workforce.annotators.query("tier != 'expert'")[ANNOTATOR])
    assert all(set(r.prefer.index) <= crowd and r.prefer.between(0, 1).all() for r in tiered)
    # The other strategies' definitions draw their annotators at random.
    assert all(r.prefer is None for r in crowd_requests("random"))


class _Later(_Recording):
    """People: the answers are not in when the round asks for them."""

    def collect(self, ticket):
        return None


def test_a_round_whose_answers_are_not_in_says_so(cfg, world) -> None:
    with pytest.raises(LoopError, match="not answered"):
        run_program(cfg.replace(strategy="random"), world=world, tracker=T.MemoryTracker(),
                    workforce=_Later(SimulatedWorkforce(world)))


def test_the_public_names_are_listed_once_and_exist() -> None:
    import experiments.ports as ports

    assert sorted(ports.__all__) == sorted(set(ports.__all__))
    assert all(hasattr(ports, name) for name in ports.__all__)
