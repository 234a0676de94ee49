"""A forge write as the job page shows it: the comment rendered as the forge would, and safe."""

from __future__ import annotations

import json

import pytest

from bot.web.writes import comment_html, shown


@pytest.mark.parametrize(("body", "has", "lacks"), [
    ("`/ka build ampere` asked by @w: **failed** · [job 2](http://bot/jobs/2)",
     ['<code>/ka build ampere</code>', "<strong>failed</strong>", '<a href="http://bot/jobs/2">job 2</a>'], []),
    ("| host | state |\n|---|---|\n| `ampere` | `success` |\n",
     ["<th>host</th>", "<td><code>ampere</code></td>"], []),
    ("<script>alert(1)</script> <img src=x onerror=alert(1)>", ["&lt;script&gt;", "&lt;img"], ["<script", "<img"]),
    ("[x](javascript:alert(1))", [], ["href"]),
    ("x\n\n<details><summary>last lines of the log</summary>\n\n```\nlog <b>\n```\n</details>\n",
     ["<details><summary>last lines of the log</summary>", "</details>", "log &lt;b&gt;"], ["<p><details>"]),
    ("<details><summary>opened</summary>\n\nnever closed", ["&lt;details&gt;"], ["<details>"]),
    ("`/ka promote <details>`\n\n<details><summary>x</summary>\n\n</details>",
     ["<code>/ka promote &lt;details&gt;</code>"], ["<code>/ka promote <details>"]),
    ('<details onclick="x"><summary>s</summary>\n\n</details>', [], ["onclick=\"", "<details onclick"]),
])
def test_a_comment_is_rendered_as_markdown_with_no_markup_of_its_own(body: str, has: list[str],
                                                                    lacks: list[str]) -> None:
    html = str(comment_html(body))
    assert all(h in html for h in has), html
    assert not any(x in html for x in lacks), html


def test_a_status_write_shows_its_state_and_description() -> None:
    row = {"id": 3, "summary": "status", "state": "sent", "attempts": 1, "last_error": None,
           "body": json.dumps({"state": "failure", "context": "ka/build/ampere", "description": "job 2: failed",
                               "target_url": "http://bot/jobs/2"})}
    got = shown(row)
    assert got["kind"] == "status" and got["status"] == {"context": "ka/build/ampere", "state": "failure",
                                                         "description": "job 2: failed",
                                                         "target_url": "http://bot/jobs/2"}


@pytest.mark.parametrize("body", [
    "</details>\n\n<details><summary>x</summary>\n",  # closed before it opens
    "> <details><summary>x</summary>\n\nout of the quote\n\n</details>\n",  # across a quote's edge
    "<details><summary>a</summary>\n\n<details><summary>b</summary>\n\n</details>\n\n</details>\n",  # nested
])
def test_folding_that_does_not_pair_up_in_order_stays_text(body: str) -> None:
    html = str(comment_html(body))
    assert "<details>" not in html and "</details>" not in html, html
