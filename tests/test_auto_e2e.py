"""End to end with the defaults a user gets: the real bot, reply sender and worker, the backbone
left to `auto` (the rest of the suite pins Lite0), an admin retraining through the chat."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakegram.api import PlaygroundClient
from harness.stack import Stack
from harness.user import kaggle_zip, retrain_by_reply

pytestmark = pytest.mark.slow

ADMIN = 4343


@pytest.fixture(scope="module")
def auto_stack(tmp_path_factory: pytest.TempPathFactory, breedbot_home: Path) -> Iterator[Stack]:
    """A stack of its own whose worker runs `RETRAIN_ARCHITECTURE=auto`, as `make up` does."""
    root = tmp_path_factory.mktemp("auto-e2e")
    with Stack(root, redis_password=None).running(
        RETRAIN_ARCHITECTURE="auto", BREEDBOT_HOME=str(breedbot_home)
    ) as stack:
        stack.start_worker("auto")
        stack.start_bot(ADMIN_IDS=str(ADMIN))
        yield stack


def test_an_auto_retrain_through_the_chat_answers_the_next_photo(
    auto_stack: Stack, datasets: Path
) -> None:
    with contextlib.closing(PlaygroundClient(auto_stack.url)) as chat:
        retrain_by_reply(chat, ADMIN, kaggle_zip(), "/retrain steps=60")

        def live(events: list[dict[str, Any]]) -> bool:
            return any("Model v1 trained" in e["message"].get("text", "")
                       for e in events if e["type"] == "edited")  # fmt: skip

        chat.wait_for(ADMIN, live, timeout=600)
        # The worker chose among the candidates itself: nothing pinned the backbone.
        metrics = auto_stack.registry().record(1)["metrics"]
        assert metrics["auto"]["chosen"] == metrics["backbone"]["handle"], metrics
        assert len(metrics["auto"]["candidates"]) == 3, metrics["auto"]
        assert auto_stack.registry().active_version() == 1
        cursor = chat.events(ADMIN)[-1]["seq"]
        photo = sorted((datasets / "csv-sample" / "train").glob("*.jpg"))[0].read_bytes()
        chat.send(ADMIN, file=photo, kind="photo", user_id=ADMIN)

        def answered(events: list[dict[str, Any]]) -> bool:
            return any("Model v1" in (e["message"].get("caption") or e["message"].get("text") or "")
                       for e in events if e["type"] == "sent")  # fmt: skip

        chat.wait_for(ADMIN, answered, timeout=120, after=cursor)
