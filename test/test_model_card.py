"""docs/model_card.md is what `python -m flashocc_ros.tools.model_card` writes from demo.json.
In: the committed card and the training record. Out: pass/fail (regenerate on a difference).
"""

from __future__ import annotations

import json
from pathlib import Path

from flashocc_ros.tools.model_card import CARD, RECORD, main, model_card


def test_committed_card_is_generated_from_the_record() -> None:
    assert CARD.read_text() == model_card(json.loads(RECORD.read_text())), (
        "docs/model_card.md is out of date: run python -m flashocc_ros.tools.model_card"
    )


def test_card_states_the_shipped_numbers() -> None:
    record = json.loads(RECORD.read_text())
    card = model_card(record)
    packed = record["packed"]
    assert f"**{100 * packed['heldout_miou_packed_weights']:.1f} %**" in card
    assert card.count("\n| ") >= len(record["previous_stages"]) + 1 + 18  # stages + classes
    assert record["command"] in card


def test_check_mode_exits_1_on_a_stale_card(tmp_path: Path) -> None:
    stale = tmp_path / "card.md"
    stale.write_text("old\n")
    assert main(["--check", "--out", str(stale)]) == 1
    assert main(["--out", str(stale)]) == 0 and main(["--check", "--out", str(stale)]) == 0


def test_record_is_the_one_the_node_loads() -> None:
    from flashocc_ros.runtime.factory import DEMO_WEIGHTS

    assert DEMO_WEIGHTS.with_suffix(".json") == RECORD
