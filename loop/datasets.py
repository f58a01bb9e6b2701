"""Loaders for the real annotation crowds kept beside the project in ``../shared/data``.

Each loader returns a :class:`CrowdDataset`: the long annotations frame with integer class
codes, gold labels for the items that have them, and the class names. The crowds are read
from disk (the only I/O in :mod:`loop` besides :mod:`loop.store`); the math never calls here.

The folder is found through the environment variable ``LABELLOOP_SHARED_DATA`` or, by
default, at ``<checkout>/../shared/data``. :func:`shared_data_dir` returns ``None`` when it is
absent, so tests and benchmarks can skip with a clear reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .columns import ANNOTATOR, ITEM, LABEL, SECONDS
from .exceptions import SchemaError

__all__ = [
    "CrowdDataset",
    "CROWDS",
    "load_crowd",
    "load_music_genre",
    "load_quiz",
    "load_rte",
    "load_temp",
    "load_weather",
    "load_wsd",
    "shared_data_dir",
]

QUIZ_SUBJECTS = ("CHINESE", "ENGLISH", "ITMANAGE", "MEDICINE", "POKEMON", "SCIENCE")


@dataclass(frozen=True)
class CrowdDataset:
    """A real crowd: who said what about which item, and the truth where it is known.

    Attributes
    ----------
    name : str
    annotations : DataFrame
        Columns ``item_id, annotator_id, label`` (label is an int code into ``classes``), plus
        ``seconds`` where the source records time spent.
    gold : Series
        Gold class code by ``item_id``, for the items that have gold.
    classes : tuple of str
        Class names; ``classes[code]`` names a code.
    features : DataFrame or None
        Numeric features by ``item_id`` where the source ships them (music genre).
    test_features, test_gold : DataFrame or None, Series or None
        A held-out set with features and gold but no crowd (music genre).
    """

    name: str
    annotations: pd.DataFrame
    gold: pd.Series
    classes: tuple[str, ...]
    features: pd.DataFrame | None = None
    test_features: pd.DataFrame | None = None
    test_gold: pd.Series | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def shared_data_dir() -> Path | None:
    """The folder of real crowds, or ``None`` when this machine does not have it."""
    env = os.environ.get("LABELLOOP_SHARED_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [here.parents[1].parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for path in candidates:
        if (path / "README.md").is_file():
            return path
    return None


def _root() -> Path:
    root = shared_data_dir()
    if root is None:
        raise FileNotFoundError(
            "The real crowds are not on this machine: expected ../shared/data beside the checkout "
            "or a folder named by LABELLOOP_SHARED_DATA."
        )
    return root


def _encode(annotations: pd.DataFrame, gold: pd.Series, classes: list | None = None):
    """Map label strings to codes shared by annotations and gold."""
    if classes is None:
        classes = sorted(set(annotations[LABEL].astype(str)) | set(gold.astype(str)))
    code = {c: i for i, c in enumerate(classes)}
    annotations = annotations.assign(**{LABEL: annotations[LABEL].astype(str).map(code).astype(np.int64)})
    gold = gold.astype(str).map(code).astype(np.int64)
    return annotations.reset_index(drop=True), gold, tuple(str(c) for c in classes)


def load_music_genre() -> CrowdDataset:
    """Rodrigues et al. (2013): 700 songs, 2,945 MTurk labels by 44 annotators, 10 genres,
    124 audio features; plus 300 held-out songs with features and gold."""
    folder = _root() / "music_genre_rodrigues"
    raw = pd.read_csv(folder / "mturk_answers.csv.gz", lineterminator="\r")
    raw = raw.rename(columns=lambda c: c.strip())
    raw = raw.dropna(subset=["WorkerID", "Input.song", "Answer.pred_label"])
    annotations = pd.DataFrame({
        ITEM: raw["Input.song"].str.strip(),
        ANNOTATOR: raw["WorkerID"].str.strip(),
        LABEL: raw["Answer.pred_label"].str.strip(),
    }).drop_duplicates([ITEM, ANNOTATOR])
    gold = raw.groupby(raw["Input.song"].str.strip())["Input.true_label"].first().str.strip()
    gold.index.name = ITEM

    def features(path: Path) -> tuple[pd.DataFrame, pd.Series]:
        frame = pd.read_csv(path).dropna(axis=1, how="all").set_index("id")
        frame.index = frame.index.str.strip()
        frame.index.name = ITEM
        genre = frame.pop("class").astype(str).str.strip()
        return frame.astype(np.float64), genre

    train_x, train_genre = features(folder / "music_genre_gold.csv.gz")
    test_x, test_genre = features(folder / "music_genre_test.csv.gz")
    classes = sorted(set(gold) | set(annotations[LABEL]) | set(train_genre))
    annotations, gold, names = _encode(annotations, gold, classes)
    code = {c: i for i, c in enumerate(classes)}
    return CrowdDataset(
        name="music_genre",
        annotations=annotations,
        gold=gold,
        classes=names,
        features=train_x,
        test_features=test_x,
        test_gold=test_genre.map(code).astype(np.int64),
    )


def _snow(kind: str) -> CrowdDataset:
    folder = _root() / "rte_temp_snow2008"
    sep = "\t" if kind == "wsd" else ","
    raw = pd.read_csv(folder / f"{kind}.standardized.csv.gz", sep=sep)
    fmt = "%a %b %d %H:%M:%S PDT %Y"
    seconds = (pd.to_datetime(raw["end"], format=fmt) - pd.to_datetime(raw["start"], format=fmt)).dt.total_seconds()
    annotations = pd.DataFrame({
        ITEM: raw["orig_id"].astype(str),
        ANNOTATOR: raw["!amt_worker_ids"].astype(str),
        LABEL: raw["response"].astype(str),
        SECONDS: seconds.to_numpy(),
    }).drop_duplicates([ITEM, ANNOTATOR])
    gold = raw.groupby(raw["orig_id"].astype(str))["gold"].first().astype(str)
    gold.index.name = ITEM
    annotations, gold, classes = _encode(annotations, gold)
    return CrowdDataset(name=kind, annotations=annotations, gold=gold, classes=classes)


def load_rte() -> CrowdDataset:
    """Snow et al. (2008) recognising textual entailment: 800 items x 10 labels, binary."""
    return _snow("rte")


def load_temp() -> CrowdDataset:
    """Snow et al. (2008) temporal ordering: 462 items x 10 labels, binary."""
    return _snow("temp")


def load_wsd() -> CrowdDataset:
    """Snow et al. (2008) word sense disambiguation: 177 items x 10 labels, 3 senses."""
    return _snow("wsd")


def load_weather() -> CrowdDataset:
    """CrowdFlower weather sentiment: 1,000 tweets x 20 judgements, 5 classes.

    Gold is the second-pass aggregated label on the items where the second pass confirmed
    it (``correct_category == "Yes"``).
    """
    folder = _root() / "weather_sentiment_crowdflower"
    raw = pd.read_csv(folder / "weather-non-agg-DFE.csv.gz")
    annotations = pd.DataFrame({
        ITEM: raw["tweet_id"].astype(str),
        ANNOTATOR: raw["worker_id"].astype(str),
        LABEL: raw["emotion"].astype(str),
    }).drop_duplicates([ITEM, ANNOTATOR])
    checked = pd.read_csv(folder / "weather-evaluated-agg-DFE.csv.gz")
    checked = checked[checked["correct_category"].astype(str).str.strip() == "Yes"]
    gold = checked.groupby(checked["tweet_id"].astype(str))["sentiment"].first().astype(str)
    gold = gold[gold.index.isin(annotations[ITEM])]
    gold.index.name = ITEM
    annotations, gold, classes = _encode(annotations, gold)
    return CrowdDataset(name="weather", annotations=annotations, gold=gold, classes=classes)


def load_quiz(subject: str = "SCIENCE") -> CrowdDataset:
    """Li et al. (2024) multiple-choice quizzes: every annotator answers every question."""
    if subject not in QUIZ_SUBJECTS:
        raise SchemaError(f"The 'subject' argument must be one of {list(QUIZ_SUBJECTS)}. Got {subject!r} instead.")
    folder = _root() / "quiz_li2024" / subject
    wide = pd.read_csv(folder / "answer.csv.gz")
    long = wide.melt(id_vars="question_id", var_name=ANNOTATOR, value_name=LABEL).dropna()
    annotations = pd.DataFrame({
        ITEM: long["question_id"].astype(str),
        ANNOTATOR: long[ANNOTATOR].astype(str),
        LABEL: long[LABEL].astype(str).str.strip(),
    })
    truth = pd.read_csv(folder / "truth.csv.gz")
    gold = pd.Series(truth["truth"].astype(str).str.strip().to_numpy(), index=truth["question_id"].astype(str))
    gold.index.name = ITEM
    annotations, gold, classes = _encode(annotations, gold)
    return CrowdDataset(name=f"quiz_{subject.lower()}", annotations=annotations, gold=gold, classes=classes)


CROWDS = {
    "music_genre": load_music_genre,
    "rte": load_rte,
    "temp": load_temp,
    "wsd": load_wsd,
    "weather": load_weather,
}


def load_crowd(name: str) -> CrowdDataset:
    """Load one of :data:`CROWDS` by name, or ``quiz_<subject>``."""
    if name.startswith("quiz_"):
        return load_quiz(name.removeprefix("quiz_").upper())
    if name not in CROWDS:
        raise SchemaError(f"The 'name' argument must be one of {sorted(CROWDS) + ['quiz_<subject>']}. Got {name!r} instead.")
    return CROWDS[name]()
