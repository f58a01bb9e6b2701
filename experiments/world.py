"""The simulated world a program runs in: items arriving, their truth, and who labels them.

**Items.** A dataset is split once, by the seed, into three disjoint parts: a *holdout* of
gold items the model is evaluated on (digits: ``holdout_items`` items; music genre: its 300
test songs), a *calibration* slice of gold items the temperature is fitted on
(``calibration_items``), and the *stream*: ``(rounds + 1) * items_per_round`` items that
arrive ``items_per_round`` at a time (round 0 is the seed round). Neither gold set ever
enters training.

**Initial labels.** Every stream item arrives with one crowd label, drawn once per world
(so every strategy starts from the very same noisy labels). The first resolution of an item
is that label. What a strategy removes is counted against these initial labels.

**Who labels.** The *crowd* are the non-expert annotators, the *experts* a separate pool.
Crowd work (initial labels, reviews, double-blind pairs, triple annotation) goes to crowd
members who have not labelled the item yet; expert work (the expert route, adjudication,
audits) to experts who have not labelled it.

- digits: :func:`loop.simulate.make_crowd` with the configured tiers (default 12 novices,
  6 experienced, 3 experts; accuracies, seconds and hourly rates from
  :data:`loop.simulate.DEFAULT_PROFILES`); errors land on the digit pairs a model really
  confuses (the confusability of out-of-fold probabilities on the whole dataset).
- a team's table (``program.dataset: {path: ..., gold: ...}``, see :mod:`experiments.table`):
  the items whose gold is known are the world, gold their truth; holdout, calibration and
  stream are drawn from them. An item's initial label is the table's ``label`` (the team's
  current label, by the annotator ``current-label``); an item not labelled yet gets one crowd
  label. With ``program.annotations`` crowd work replays the team's real answers like music
  genre's below (with their ``seconds`` when the file has them), then ``crowd_like`` twins;
  experts are simulated (``crowd.experts`` of them with ``crowd.tiers: replay``, else the
  tiers' expert count). Without annotations the crowd follows the tier profiles, like
  digits, with errors where out-of-fold probabilities on the gold items put them.
- music genre (``crowd.tiers: replay``): the real Mechanical Turk answers are replayed: the
  initial label of a song is one of its real answers, drawn at random, and crowd work takes
  the song's other real answers in random order. When a song has no real answer left, a
  simulated twin (:func:`loop.simulate.crowd_like` fitted on the real crowd) of one of the
  real annotators who did not label it answers. Experts are simulated (expert tier, errors
  following the real crowd's confusions). The real answers carry no time: their seconds are
  drawn from the novice tier's profile and they are paid the novice rate.

**Drift scenarios** (digits; ``program.drift_scenario``, from ``program.drift_onset_round``
``r0``: the arrivals of rounds ``r0, r0 + 1, ...`` drift, the earlier ones do not). Drawn from
their own random numbers (seed and 31), so a world without drift is the world it always was.

- ``prior_shift``: three classes (drawn) arrive six times as often as the others (about 72%
  of the arrivals instead of 30%). Annotators are as good as before: the labels' distribution
  moves, their errors do not.
- ``covariate_shift``: half of the arrivals are smudged (the three left pixel columns, 24
  features, darkened by 6 of 16 grey levels); the crowd mistakes a smudged digit for the class
  it is most confused with (the confusability below) 40% of the time, on top of its own errors.
- ``new_subpopulation``: a new variant of one class (drawn): mirrored digits, up to 25% of the
  arrivals (as many as the class's items allow), which the crowd takes for the class it is
  most confused with 60% of the time. Experts know the variant (their errors are their usual
  ones). Truth stays the class.

**Cost.** An annotation costs ``seconds / 3600 * hourly rate`` of its annotator (the store
computes it from the rates registered here); budgets and totals are in these units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loop.columns import ANNOTATOR, COST, ITEM, LABEL, SECONDS
from loop.simulate import (DEFAULT_PROFILES, Guideline, SimulatedCrowd, Tier, confusability_from_confusion,
                           confusability_from_probs, crowd_like, fit_crowd_profile, make_crowd)
from loop.store import EXPERT_TIER
from loop.strategies import TaskCosts

from .config import REPLAY, ConfigError, Dataset, DriftScenario, ProgramConfig, config_error

__all__ = ["TIER_CODES", "World", "Workforce", "build_world"]

# Tier codes written to the store's annotators and tasks (an int column there).
# The store hands expert and adjudication tasks to the expert tier only (its EXPERT_TIER).
TIER_CODES = {Tier.NOVICE.value: 1, Tier.EXPERIENCED.value: 2, Tier.EXPERT.value: EXPERT_TIER}
_ANSWER_COLUMNS = [ITEM, ANNOTATOR, LABEL, SECONDS, COST]


def _no_answers() -> pd.DataFrame:
    return pd.DataFrame({ITEM: pd.Series(dtype=object), ANNOTATOR: pd.Series(dtype=object),
                         LABEL: pd.Series(dtype=np.int64), SECONDS: pd.Series(dtype=np.float64),
                         COST: pd.Series(dtype=np.float64)})


def expected_cost(tier: Tier, *, speed_spread: bool = True) -> float:
    """Expected cost of one annotation by an annotator of ``tier`` (log-normal mean seconds).

    ``speed_spread=False`` for answers whose seconds vary from item to item only (the replayed
    real crowd), not also from annotator to annotator (simulated annotators).
    """
    p = DEFAULT_PROFILES[tier]
    variance = p.seconds_sigma ** 2 + (p.speed_spread ** 2 if speed_spread else 0.0)
    seconds = p.seconds_median * np.exp(variance / 2)
    return float(seconds / 3600 * p.cost_per_hour)


@dataclass(frozen=True, eq=False)
class Workforce:
    """Who answers: a crowd (simulated, or real answers replayed with simulated twins) and experts.

    Parameters
    ----------
    crowd : SimulatedCrowd
        Simulated crowd members (digits), or the real crowd's twins (music genre).
    experts : SimulatedCrowd
    replay : DataFrame, optional
        Real answers (``item_id, annotator_id, label[, seconds]``) served before any twin.
    team : str, optional
        The annotator of the labels a team's items came with (their initial labels), paid the
        novice rate; answers nothing in the program.
    """

    crowd: SimulatedCrowd
    experts: SimulatedCrowd
    replay: pd.DataFrame | None = None
    team: str | None = None
    confused: pd.Series | None = None  # item id -> the class the crowd mistakes it for (drift scenarios)
    confusion_rate: float = 0.0  # how often it does, on top of its own errors

    @property
    def annotators(self) -> pd.DataFrame:
        """Everyone who may answer: ``annotator_id, tier, hourly_rate``."""
        people = list(self.crowd.annotators) + list(self.experts.annotators)
        frame = pd.DataFrame({ANNOTATOR: [a.annotator_id for a in people],
                              "tier": [a.tier.value for a in people],
                              "hourly_rate": [a.cost_per_hour for a in people]})
        if self.replay is not None:
            # The real crowd (and their twins, who carry the same ids) is paid the novice rate.
            rate = DEFAULT_PROFILES[Tier.NOVICE].cost_per_hour
            frame.loc[frame["tier"] != Tier.EXPERT.value, "hourly_rate"] = rate
            real = pd.Index(self.replay[ANNOTATOR].unique()).difference(frame[ANNOTATOR])
            frame = pd.concat([frame, pd.DataFrame({ANNOTATOR: real, "tier": Tier.NOVICE.value, "hourly_rate": rate})],
                              ignore_index=True)
        if self.team is not None:
            frame = pd.concat([frame, pd.DataFrame({ANNOTATOR: [self.team], "tier": Tier.NOVICE.value,
                                                    "hourly_rate": DEFAULT_PROFILES[Tier.NOVICE].cost_per_hour})],
                              ignore_index=True)
        return frame

    def ask_crowd(self, truth: pd.Series, n: int, *, exclude: pd.DataFrame | None, rng: np.random.Generator,
                  guideline: Guideline | None = None, adopters: Any = None,
                  prefer: pd.Series | None = None) -> pd.DataFrame:
        """``n`` crowd answers per item of ``truth`` from people not in ``exclude``; simulated
        members in ``adopters`` answer as ``guideline`` clarifies (replayed real answers stay
        as they were given). ``prefer`` (skill by annotator id) serves a replayed item's most
        skilled real answerers first; the simulated crowd draws uniformly (see
        :class:`experiments.ports.Request`)."""
        if truth.empty or n == 0:
            return _no_answers()
        follow = {"guideline": guideline, "adopters": adopters}
        if self.replay is None:
            answers = self.crowd.ask(truth, labels_per_item=n, exclude=exclude, rng=rng, **follow)[_ANSWER_COLUMNS]
        else:
            answers = self._replayed(truth, n, exclude, rng, follow, prefer)
        return self._confuse(answers, rng)

    def _confuse(self, answers: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        """The drifted items' answers the crowd gets wrong by confusing them with another class."""
        if self.confused is None or answers.empty:
            return answers
        target = self.confused.reindex(answers[ITEM].to_numpy()).to_numpy(dtype=np.float64)
        hit = ~np.isnan(target) & (rng.random(len(answers)) < self.confusion_rate)
        if not hit.any():
            return answers
        labels = answers[LABEL].to_numpy(dtype=np.int64).copy()
        labels[hit] = target[hit].astype(np.int64)
        return answers.assign(**{LABEL: labels})

    def ask_experts(self, truth: pd.Series, *, exclude: pd.DataFrame | None, rng: np.random.Generator) -> pd.DataFrame:
        """One expert answer per item of ``truth`` from an expert not in ``exclude``."""
        if truth.empty:
            return _no_answers()
        return self.experts.ask(truth, exclude=exclude, rng=rng)[_ANSWER_COLUMNS]

    def _replayed(self, truth: pd.Series, n: int, exclude: pd.DataFrame | None, rng: np.random.Generator,
                  follow: dict[str, Any] | None = None, prefer: pd.Series | None = None) -> pd.DataFrame:
        real = self.replay[self.replay[ITEM].isin(truth.index)]
        if exclude is not None and len(exclude):
            used = pd.MultiIndex.from_frame(exclude[[ITEM, ANNOTATOR]])
            real = real[~pd.MultiIndex.from_frame(real[[ITEM, ANNOTATOR]]).isin(used)]
        # A random order of each item's unused real answers (the most skilled first, when
        # preferred); the first n are served.
        skill = 0.0 if prefer is None else prefer.reindex(real[ANNOTATOR].to_numpy()).fillna(0.5).to_numpy()
        real = real.assign(_skill=skill, _key=rng.random(len(real)))
        real = real.sort_values([ITEM, "_skill", "_key"], ascending=[True, False, True], kind="stable")
        served = real[real.groupby(ITEM).cumcount() < n]
        profile = DEFAULT_PROFILES[Tier.NOVICE]
        if SECONDS in served:  # a team's answers may carry the time they took
            seconds = served[SECONDS].to_numpy(dtype=np.float64)
        else:
            seconds = profile.seconds_median * np.exp(profile.seconds_sigma * rng.standard_normal(len(served)))
        served = served[[ITEM, ANNOTATOR, LABEL]]
        served = served.assign(**{SECONDS: seconds, COST: seconds / 3600 * profile.cost_per_hour})
        short = n - served.groupby(ITEM).size().reindex(truth.index, fill_value=0)
        short = short[short > 0]
        if short.empty:
            return served.reset_index(drop=True)[_ANSWER_COLUMNS]
        # Twins must not be the real people who answered (or may still answer) the item.
        blocked = pd.concat([self.replay.loc[self.replay[ITEM].isin(short.index), [ITEM, ANNOTATOR]],
                             *([] if exclude is None else [exclude[[ITEM, ANNOTATOR]]])], ignore_index=True)
        twins = self.crowd.ask(truth[short.index], labels_per_item=short.to_numpy(), exclude=blocked, rng=rng,
                               **(follow or {}))
        # Twins stand in for the real people and are paid like them.
        twins[COST] = twins[SECONDS] / 3600 * profile.cost_per_hour
        return pd.concat([served, twins[_ANSWER_COLUMNS]], ignore_index=True)


@dataclass(frozen=True, eq=False)
class World:
    """Everything the simulation knows and the program may not look at directly (truth).

    Attributes
    ----------
    dataset : str
    classes : tuple of str
    features : DataFrame
        Features of every stream and gold item, indexed by item id (str).
    stream : ndarray of str, shape ((rounds + 1) * items_per_round,)
        Stream item ids in arrival order.
    truth : Series
        True class code of every stream item, by item id.
    initial : DataFrame
        The initial crowd label of every stream item (``item_id, annotator_id, label,
        seconds, cost``), in arrival order.
    calibration, holdout : Series
        Gold class codes by item id.
    workforce : Workforce
    costs : TaskCosts
        Planned cost of one crowd and one expert annotation.
    """

    dataset: str
    classes: tuple[str, ...]
    features: pd.DataFrame
    stream: np.ndarray
    truth: pd.Series
    initial: pd.DataFrame
    calibration: pd.Series
    holdout: pd.Series
    workforce: Workforce
    costs: TaskCosts
    items_per_round: int = field(default=0)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def x(self, item_ids: Any) -> np.ndarray:
        """Features of ``item_ids``, shape ``(n, d)``, float64."""
        where = self.features.index.get_indexer(pd.Index(item_ids))
        return self.features.to_numpy(dtype=np.float64)[where]

    def arrivals(self, round_: int) -> np.ndarray:
        """Ids of the items arriving in round ``round_`` (0 = seed round)."""
        return self.stream[round_ * self.items_per_round:(round_ + 1) * self.items_per_round]


def _model_for_confusability():
    from .models import make_estimator

    return make_estimator()  # the built-in model: the world's confusions, whatever model a program trains


def build_world(cfg: ProgramConfig) -> World:
    """Split the dataset, draw the workforce and the initial labels, all from ``cfg.seed``.

    The world depends only on the dataset, crowd, sizes and seed, never on the strategy, so
    every strategy of a comparison meets the same items, truth and initial labels.

    Raises
    ------
    ConfigError
        When the dataset has too few items for the rounds, items per round and gold sets.
    """
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng([cfg.seed, 7])
    with threadpool_limits(1):  # small arrays; BLAS threads only fight over shared cores
        if cfg.table is not None:
            return _table_world(cfg, rng)
        if cfg.dataset is Dataset.DIGITS:
            return _digits_world(cfg, rng)
        return _music_world(cfg, rng)


def _check_size(cfg: ProgramConfig, available: int) -> int:
    need = (cfg.rounds + 1) * cfg.items_per_round
    if need > available:
        raise ConfigError(f"program.items_per_round: expected (rounds + 1) * items_per_round <= {available} "
                          f"stream items of {cfg.dataset.value}, got ({cfg.rounds} + 1) * {cfg.items_per_round} = {need}")
    return need


def _digits_world(cfg: ProgramConfig, rng: np.random.Generator) -> World:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import cross_val_predict

    x, y = load_digits(return_X_y=True)
    ids = np.array([f"digit-{i:04d}" for i in range(len(y))], dtype=object)
    order = rng.permutation(len(y))
    holdout, calib = order[:cfg.holdout_items], order[cfg.holdout_items:cfg.holdout_items + cfg.calibration_items]
    rest = order[cfg.holdout_items + cfg.calibration_items:]
    stream = rest[:_check_size(cfg, rest.size)]
    # Errors land on the pairs a model confuses: the world's physics, fitted once on all digits.
    confusability = confusability_from_probs(
        cross_val_predict(_model_for_confusability(), x, y, cv=5, method="predict_proba"), y)
    tiers = dict(cfg.crowd.tiers)
    people = make_crowd(tiers, 10, confusability=confusability, rng=rng)
    crowd = SimulatedCrowd(tuple(a for a in people.annotators if a.tier is not Tier.EXPERT))
    experts = SimulatedCrowd(tuple(a for a in people.annotators if a.tier is Tier.EXPERT))
    stream, x, confused, rate = _drift(cfg, rest, stream, x, y, confusability)
    workforce = Workforce(crowd, experts, confused=None if confused is None else confused.rename(index=lambda i: ids[i]),
                          confusion_rate=rate)
    truth = pd.Series(y[stream], index=pd.Index(ids[stream], name=ITEM), name=LABEL)
    crowd_cost = float(np.mean([expected_cost(a.tier) for a in crowd.annotators]))
    return _finish(cfg, rng, dataset="digits", classes=tuple(str(c) for c in range(10)),
                   features=pd.DataFrame(x, index=pd.Index(ids, name=ITEM)), truth=truth,
                   calibration=pd.Series(y[calib], index=pd.Index(ids[calib], name=ITEM)),
                   holdout=pd.Series(y[holdout], index=pd.Index(ids[holdout], name=ITEM)),
                   workforce=workforce, costs=TaskCosts(crowd=crowd_cost, expert=expected_cost(Tier.EXPERT)))


SHIFT_FAVOURED, SHIFT_WEIGHT = 3, 6.0  # prior_shift: three classes, six times as likely
SMUDGE_SHARE, SMUDGE_LEVEL, SMUDGE_CONFUSION = 0.5, 6.0, 0.4  # covariate_shift
VARIANT_SHARE, VARIANT_CONFUSION = 0.25, 0.6  # new_subpopulation


def _drift(cfg: ProgramConfig, rest: np.ndarray, stream: np.ndarray, x: np.ndarray, y: np.ndarray,
           confusability: np.ndarray) -> tuple[np.ndarray, np.ndarray, pd.Series | None, float]:
    """The stream, features, confused items (by row of ``x``: the class the crowd mistakes each
    for) and the rate of that mistake under ``cfg.drift_scenario`` (module docstring)."""
    scenario = cfg.drift_scenario
    if scenario is DriftScenario.NONE:
        return stream, x, None, 0.0
    rng = np.random.default_rng([cfg.seed, 31])
    onset, n = cfg.drift_onset_round * cfg.items_per_round, stream.size
    before, pool = rest[:onset], rest[onset:]
    off = np.asarray(confusability, dtype=np.float64).copy()
    np.fill_diagonal(off, -np.inf)
    partner = off.argmax(axis=1)  # the class each class is most confused with
    x = x.copy()
    if scenario is DriftScenario.PRIOR_SHIFT:
        favoured = rng.choice(10, SHIFT_FAVOURED, replace=False)
        weight = np.where(np.isin(y[pool], favoured), SHIFT_WEIGHT, 1.0)
        after = rng.choice(pool, n - onset, replace=False, p=weight / weight.sum())
        return np.concatenate([before, rng.permutation(after)]), x, None, 0.0
    if scenario is DriftScenario.COVARIATE_SHIFT:
        after = stream[onset:]
        smudged = after[rng.random(after.size) < SMUDGE_SHARE]
        cols = (np.arange(64) % 8) < 3
        x[np.ix_(smudged, cols)] = np.minimum(x[np.ix_(smudged, cols)] + SMUDGE_LEVEL, 16.0)
        return stream, x, pd.Series(partner[y[smudged]], index=smudged), SMUDGE_CONFUSION
    variant_class = int(rng.integers(10))
    mine, others = pool[y[pool] == variant_class], rng.permutation(pool[y[pool] != variant_class])
    rounds_after = cfg.rounds + 1 - cfg.drift_onset_round
    per_round = min(int(round(VARIANT_SHARE * cfg.items_per_round)), mine.size // rounds_after)
    chunks, used = [], 0
    for r in range(rounds_after):
        take = cfg.items_per_round - per_round
        chunks.append(rng.permutation(np.concatenate([mine[r * per_round:(r + 1) * per_round],
                                                      others[used:used + take]])))
        used += take
    variants = mine[:per_round * rounds_after]
    x[variants] = x[variants].reshape(-1, 8, 8)[:, :, ::-1].reshape(-1, 64)  # mirrored: a new look
    return (np.concatenate([before, *chunks]), x, pd.Series(partner[variant_class], index=variants),
            VARIANT_CONFUSION)


def _music_world(cfg: ProgramConfig, rng: np.random.Generator) -> World:
    from loop.datasets import load_music_genre

    data = load_music_genre()
    gold = data.gold.astype(np.int64)
    train = data.features.index.intersection(gold.index)
    order = rng.permutation(train.size)
    calib = train[order[:cfg.calibration_items]]
    rest = train[order[cfg.calibration_items:]]
    stream = rest[:_check_size(cfg, rest.size)]
    test_ids = pd.Index([f"test-{i}" for i in data.test_features.index], name=ITEM)
    features = pd.concat([data.features, data.test_features.set_axis(test_ids)])
    features.index = features.index.astype(str).rename(ITEM)
    real = data.annotations[[ITEM, ANNOTATOR, LABEL]].copy()
    real[ANNOTATOR] = real[ANNOTATOR].astype(str)
    real[ITEM] = real[ITEM].astype(str)
    k = len(data.classes)
    profile = fit_crowd_profile(data.annotations, gold, n_classes=k)
    twins = crowd_like(profile, annotator_ids=sorted(real[ANNOTATOR].unique()), rng=rng)
    # Experts err like the real crowd does, only far less often.
    counts = pd.crosstab(gold.reindex(real[ITEM]).to_numpy(), real[LABEL].to_numpy()).reindex(
        index=range(k), columns=range(k), fill_value=0).to_numpy(dtype=np.float64)
    experts = make_crowd({Tier.EXPERT: cfg.crowd.experts}, k, confusability=confusability_from_confusion(counts + 1e-3),
                         rng=rng)
    workforce = Workforce(twins, experts, replay=real[real[ITEM].isin(stream)].reset_index(drop=True))
    truth = pd.Series(gold.reindex(stream).to_numpy(), index=pd.Index(stream.astype(str), name=ITEM), name=LABEL)
    test_gold = pd.Series(data.test_gold.to_numpy(dtype=np.int64), index=test_ids)
    return _finish(cfg, rng, dataset="music_genre", classes=tuple(data.classes), features=features, truth=truth,
                   calibration=gold.reindex(calib).set_axis(calib.astype(str)), holdout=test_gold,
                   workforce=workforce,
                   costs=TaskCosts(crowd=expected_cost(Tier.NOVICE, speed_spread=False), expert=expected_cost(Tier.EXPERT)))


def _finish(cfg: ProgramConfig, rng: np.random.Generator, *, dataset: str, classes: tuple[str, ...],
            features: pd.DataFrame, truth: pd.Series, calibration: pd.Series, holdout: pd.Series,
            workforce: Workforce, costs: TaskCosts, team: pd.Series | None = None) -> World:
    """The world, with each stream item's initial label: the ``team``'s label where given (by
    ``workforce.team``), else one crowd label."""
    asked = truth if team is None else truth[~truth.index.isin(team.index)]
    initial = workforce.ask_crowd(asked, 1, exclude=None, rng=rng)
    if team is not None:
        initial = pd.concat([initial, _team_answers(team, workforce.team, rng)], ignore_index=True)
    initial = initial.set_index(ITEM).reindex(truth.index).reset_index()
    return World(dataset=dataset, classes=classes, features=features, stream=truth.index.to_numpy(dtype=object),
                 truth=truth, initial=initial, calibration=calibration.astype(np.int64),
                 holdout=holdout.astype(np.int64), workforce=workforce, costs=costs,
                 items_per_round=cfg.items_per_round)


# --- a team's table ---------------------------------------------------------------------------

_TEAM = "current-label"  # the annotator of a table's current labels
_MIN_CROWD = 5  # distinct crowd members an item may need: the program asks up to MAX_LABELS labels


def _table_world(cfg: ProgramConfig, rng: np.random.Generator) -> World:
    """The world of a team's table: its items with gold (see the module docstring)."""
    from .table import simulation_table

    table = simulation_table(cfg)
    name = f"{table.name} ({cfg.table.path})"
    gold = table.known_gold
    k = len(table.classes)
    need = (cfg.rounds + 1) * cfg.items_per_round  # simulation_table checked that it fits
    order = rng.permutation(gold.size)
    holdout = gold.iloc[order[:cfg.holdout_items]]
    calib = gold.iloc[order[cfg.holdout_items:cfg.holdout_items + cfg.calibration_items]]
    truth = gold.iloc[order[cfg.holdout_items + cfg.calibration_items:][:need]].rename(LABEL)
    truth.index = truth.index.rename(ITEM)
    features = table.features.loc[gold.index]
    n_experts = cfg.crowd.experts if cfg.crowd.replay else cfg.crowd.tiers[Tier.EXPERT.value]
    team = _team_name(table.annotations)
    if table.annotations is None:
        if cfg.crowd.replay:
            raise config_error("crowd.tiers", "tier counts for a table without program.annotations (replay "
                               "replays the team's own answers)", REPLAY)
        y = gold.to_numpy()
        confusability = confusability_from_probs(_out_of_fold(features.to_numpy(), y, k, name), y)
        people = make_crowd(dict(cfg.crowd.tiers), k, confusability=confusability, rng=rng)
        crowd = SimulatedCrowd(tuple(a for a in people.annotators if a.tier is not Tier.EXPERT))
        experts = SimulatedCrowd(tuple(a for a in people.annotators if a.tier is Tier.EXPERT))
        workforce = Workforce(crowd, experts, team=team)
        costs = TaskCosts(crowd=float(np.mean([expected_cost(a.tier) for a in crowd.annotators])),
                          expert=expected_cost(Tier.EXPERT))
    else:
        workforce = _replay_workforce(cfg, table.annotations, gold, truth.index, k, n_experts, team, rng)
        costs = TaskCosts(crowd=expected_cost(Tier.NOVICE, speed_spread=False), expert=expected_cost(Tier.EXPERT))
    labelled = table.labelled.reindex(truth.index).dropna().astype(np.int64)
    return _finish(cfg, rng, dataset=table.name, classes=table.classes, features=features, truth=truth,
                   calibration=calib, holdout=holdout, workforce=workforce, costs=costs, team=labelled)


def _out_of_fold(x: np.ndarray, y: np.ndarray, k: int, name: str) -> np.ndarray:
    """Out-of-fold class probabilities of the gold items, shape (n, k): where a model confuses them."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = np.bincount(y, minlength=k)
    present = counts[counts > 0]
    if present.min() < 2:
        raise ConfigError(f"program.dataset.gold: {name} has a class with a single gold item; the simulated "
                          "crowd's confusions need at least 2 gold items of each class that has any")
    folds = StratifiedKFold(n_splits=int(min(5, present.min())), shuffle=True, random_state=0)
    held_out = cross_val_predict(_model_for_confusability(), x, y, cv=folds, method="predict_proba")
    out = np.zeros((len(y), k))
    out[:, np.flatnonzero(counts)] = held_out
    return out


def _replay_workforce(cfg: ProgramConfig, answers: pd.DataFrame, gold: pd.Series, stream: pd.Index, k: int,
                      n_experts: int, team: str, rng: np.random.Generator) -> Workforce:
    """The team's real answers replayed, crowd_like twins of its annotators, simulated experts."""
    checked = answers[answers[ITEM].isin(gold.index)]
    people = sorted(answers[ANNOTATOR].unique())
    where = f"program.annotations ({cfg.annotations})"
    if checked.empty:
        raise ConfigError(f"{where}: no answer is on an item with gold; the simulated twins of the team's "
                          "annotators are fitted against gold")
    if len(people) < _MIN_CROWD:
        raise ConfigError(f"{where}: {len(people)} annotators answer; a simulation needs at least {_MIN_CROWD} "
                          "(an item may collect that many labels from distinct people)")
    profile = fit_crowd_profile(checked, gold, n_classes=k)
    twins = crowd_like(profile, annotator_ids=people, rng=rng)
    # Experts err like the team's annotators do, only far less often.
    counts = pd.crosstab(gold.reindex(checked[ITEM]).to_numpy(), checked[LABEL].to_numpy()).reindex(
        index=range(k), columns=range(k), fill_value=0).to_numpy(dtype=np.float64)
    experts = make_crowd({Tier.EXPERT: n_experts}, k, confusability=confusability_from_confusion(counts + 1e-3),
                         rng=rng)
    return Workforce(twins, experts, replay=answers[answers[ITEM].isin(stream)].reset_index(drop=True), team=team)


def _team_name(answers: pd.DataFrame | None) -> str:
    """The current labels' annotator id, distinct from every real annotator's."""
    name = _TEAM
    while answers is not None and (answers[ANNOTATOR] == name).any():
        name += "_"
    return name


def _team_answers(labels: pd.Series, team: str, rng: np.random.Generator) -> pd.DataFrame:
    """The team's current labels as answers, with the novice tier's seconds and rate."""
    profile = DEFAULT_PROFILES[Tier.NOVICE]
    seconds = profile.seconds_median * np.exp(profile.seconds_sigma * rng.standard_normal(len(labels)))
    return pd.DataFrame({ITEM: labels.index.to_numpy(dtype=object), ANNOTATOR: team,
                         LABEL: labels.to_numpy(dtype=np.int64), SECONDS: seconds,
                         COST: seconds / 3600 * profile.cost_per_hour})
