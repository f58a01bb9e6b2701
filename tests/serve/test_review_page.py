"""The annotators' review page in a real headless Chromium, against the real Serve app.

An annotator signs in with their token, answers three tasks with the keyboard (one blind,
which must show no suggestion), types a rationale and raises a flag; the answers must be in
the store as they were given.
"""

from __future__ import annotations

import time

import pytest
import requests

pytest.importorskip("ray")

from loop.store import LabelStore  # noqa: E402
from tests.browser import chromium, require_chromium  # noqa: E402

pytestmark = pytest.mark.slow

STREAM = "reviews"
CLASSES = ["neg", "neu", "pos"]
GUIDELINE = "# Reviews\nThe review's overall sentiment.\n\n## neg vs pos\nSarcasm counts as negative.\n"


@pytest.fixture(scope="module")
def app(ray_serve, tmp_path_factory):
    """The app over a label store with a stream, an annotator and three tasks (one blind)."""
    require_chromium()
    from serve.local import start_local

    root = tmp_path_factory.mktemp("review-page")
    store_url = f"sqlite:///{root}/labels.db"
    with LabelStore(store_url) as store:
        store.create_stream(STREAM, CLASSES, owner="lead")
        store.add_annotator("ann", streams=[STREAM])
        store.add_guideline(STREAM, GUIDELINE, author="lead")
        store.publish_guideline(STREAM, 1)
        store.add_items(STREAM, [{"item_id": f"r{k}", "payload": {"display": f"review number {k}: <b>so good</b>"}}
                                 for k in range(3)])
        store.add_model_version("m1")
        store.add_predictions(STREAM, "m1", [{"item_id": f"r{k}", "probs": [0.3, 0.05, 0.65], "route": "review",
                                              "reason": "low margin between pos and neg"} for k in range(3)])
        store.add_tasks(STREAM, [{"item_id": "r0", "guideline_version": 1},
                                 {"item_id": "r1", "kind": "double_blind", "guideline_version": 1},
                                 {"item_id": "r2", "guideline_version": 1}])
        token = store.issue_token("ann", "annotator")
    url = start_local({"model_name": "review-page-none", "tracking_uri": f"sqlite:///{root}/mlflow.db",
                       "store_url": store_url, "auth": "token"}, port=ray_serve.port)
    return {"url": url, "store_url": store_url, "token": token}


def _wait(driver, predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate(driver)
            if value:
                return value
        except Exception:  # noqa: BLE001 - the element may not be there yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"the page did not get there in {timeout} s: {driver.find_element('tag name', 'body').text}")


def test_the_page_is_served_with_a_strict_content_security_policy(app):
    answer = requests.get(app["url"] + "/review", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "unsafe-inline" not in policy


def test_an_annotator_answers_three_tasks_with_the_keyboard(app):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    seen = []
    with chromium() as driver:
        driver.get(app["url"] + "/review")
        driver.find_element(By.ID, "token").send_keys(app["token"])
        driver.find_element(By.ID, "sign-in").click()
        for n in range(3):
            # textContent: the headings are upper-cased by CSS, and .text reads the rendering.
            item = _wait(driver, lambda d: d.find_element(By.ID, "item-id").get_attribute("textContent"))
            _wait(driver, lambda d, item=item: item not in seen)
            seen.append(item)
            blind = "blind" in driver.find_element(By.ID, "kind").get_attribute("textContent")
            suggestion = driver.find_element(By.ID, "suggestion").text
            if blind:
                # No suggestion, no confidence, no examples: the answer must be independent.
                assert "pos" not in suggestion and "confidence" not in suggestion and "low margin" not in suggestion
                assert not driver.find_element(By.ID, "examples-box").is_displayed()
            else:
                assert driver.find_element(By.ID, "suggested-label").text == "pos"
                assert "0.65" in suggestion and "low margin between pos and neg" in suggestion
                assert "Sarcasm counts as negative" in driver.find_element(By.ID, "guideline").text
            # The payload's markup is shown as text, not rendered.
            assert "<b>so good</b>" in driver.find_element(By.ID, "display").text
            body = driver.find_element(By.TAG_NAME, "body")
            body.send_keys(str(n + 1))  # key n+1 picks class n
            if n == 0:
                driver.find_element(By.ID, "rationale").send_keys("sarcastic, so negative")
                driver.find_element(By.ID, "flag-model-wrong").click()
                body = driver.find_element(By.TAG_NAME, "body")
            body.send_keys(Keys.ENTER)
            _wait(driver, lambda d: d.find_element(By.ID, "empty").is_displayed() or
                  d.find_element(By.ID, "item-id").get_attribute("textContent") not in seen)
        _wait(driver, lambda d: d.find_element(By.ID, "empty").is_displayed())
        driver.save_screenshot(str(app["store_url"].removeprefix("sqlite:///").rsplit("/", 1)[0] + "/review.png"))

    with LabelStore(app["store_url"]) as store:
        stored = store.annotations_frame(STREAM, extras=("rationale", "flags", "source", "suggestion")) \
            .set_index("item_id")
        tasks = store.tasks_frame(STREAM).set_index("item_id")
    assert sorted(stored.index) == sorted(seen) == ["r0", "r1", "r2"]
    assert [CLASSES[stored.loc[item, "label"]] for item in seen] == CLASSES  # keys 1, 2, 3 in turn
    first = stored.loc[seen[0]]
    assert first["rationale"] == "sarcastic, so negative" and first["flags"] == ["model_wrong"]
    assert (stored["annotator_id"] == "ann").all() and (stored["seconds"] > 0).all()
    assert (tasks["status"] == "done").all()
    # The blind task's answer records that no suggestion was shown.
    assert stored.loc["r1", "suggestion"] is None or str(stored.loc["r1", "suggestion"]) == "<NA>"


def test_the_impact_panel_shows_the_annotators_own_numbers(app):
    """eve's figures on a hand-built history (tests/store/impact_history.py): round 1, three
    answers, one confirmed, three fixes of which the retrained model agrees with two, 75% of
    the round's reduction; nobody else's numbers (bob's round 1: two answers, 25%)."""
    from selenium.webdriver.common.by import By

    from tests.store.impact_history import build_history

    with LabelStore(app["store_url"]) as store:
        build_history(store)
        token = store.issue_token("eve", "annotator")
    with chromium() as driver:
        driver.get(app["url"] + "/review")
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "sign-in").click()
        _wait(driver, lambda d: d.find_element(By.ID, "impact-box").is_displayed()
              and d.find_element(By.ID, "impact-round-answers").get_attribute("textContent") != "")

        def cell(kind, key):
            return driver.find_element(By.ID, f"impact-{kind}-{key}").get_attribute("textContent")

        assert driver.find_element(By.ID, "empty").is_displayed()  # eve has no task: the panel still shows
        assert "impact" in driver.find_element(By.ID, "impact-stream").get_attribute("textContent")
        assert driver.find_element(By.ID, "impact-round-head").get_attribute("textContent") == "round 1"
        for kind in ("round", "total"):
            assert [cell(kind, k) for k in ("answers", "confirmed", "overturned", "disputes_won",
                                            "errors_fixed_model_right", "share_of_error_reduction")] == \
                ["3", "1", "0", "0", "2", "75%"], kind
        assert "Estimated skill 0.98" in driver.find_element(By.ID, "impact-note").text
        assert "25%" not in driver.find_element(By.ID, "impact-box").text
