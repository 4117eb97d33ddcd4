"""The class view's page as the hub renders it, at the many-classes threshold (routes_annotate.FILTER_ABOVE = 12):
the model's guesses are answer buttons in class order with neither rank nor percentage; above 12 classes there is a
filter box and the number keys answer the guesses, at 12 the keys stay the first ten classes'; class names (the
users' data) are escaped in text and in the data-name attributes the filter reads. The browser side is
tests/integration/test_web_annotate_many_classes.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape

from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.web import add_people, logged_in, web_hub

EVIL = "\"q'uote\" <script>alert(1)</script> & Café"


def names(count: int) -> list[str]:
    return [EVIL if i == 4 else f"class {i}" for i in range(count)]


def page_for(tmp_path: Path, count: int) -> str:
    """ann's page for one sample whose model ranks the last class, then 4, then 7."""
    with web_hub(tmp_path, num_classes=count, web={"class_names": names(count)}) as hub:
        add_people(hub)
        probs = np.full(count, 0.1 / (count - 3))
        probs[[count - 1, 4, 7]] = (0.5, 0.3, 0.1)
        sample = make_sample("cam-1", confidence=0.5, num_classes=count)
        sample.output.ClearField("class_probabilities")
        sample.output.class_probabilities.extend(probs.tolist())
        assert hub.service.submit(make_request("cam-1", [sample], m=1), "grpc").accepted == [sample.sample_id]
        return logged_in(hub, "ann").get("/annotate").get_data(as_text=True)


def guess_block(page: str) -> str:
    found = re.search(r'<ol class="guesses quick" id="guesses".*?</ol>', page, re.S)
    assert found is not None, "no guesses"
    return found.group(0)


@pytest.mark.parametrize("count", [12, 13])
def test_guesses_are_unranked_answers_and_many_classes_get_a_filter(tmp_path: Path, count: int) -> None:
    page = page_for(tmp_path, count)
    many = count > 12
    guesses = guess_block(page)
    assert re.findall(r'id="guess-(\d+)"', guesses) == ["4", "7", str(count - 1)]  # class order, not the model's
    assert "%" not in guesses and 'name="class_id"' in guesses
    assert re.findall(r'data-key="(\d)"', guesses) == (["1", "2", "3"] if many else [])
    assert ('id="class-filter"' in page) == many
    keys = re.findall(r'id="class-(\d+)">(?:<kbd>(\d)</kbd>)?', page)
    assert keys == [(str(i), str((i + 1) % 10) if i < 10 and not many else "") for i in range(count)]
    assert "<script>alert" not in page and "q'uote" not in page
    escaped = str(escape(EVIL))  # &#34; &#39; &lt; &gt; &amp;: no quote ends an attribute, no tag opens
    assert page.count(f'data-name="{escaped}"') == 2  # its guess and its button
    assert page.count(f"{escaped}</button>") == 2
