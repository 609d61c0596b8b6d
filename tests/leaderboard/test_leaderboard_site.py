"""The static leaderboard page (clbench/leaderboard/site/) driven in a headless system Chromium.

The page is opened from the file system, as a reader would, and must never run submitted text.
Set CLBENCH_SCREENSHOT_DIR to keep the screenshots for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from clbench.leaderboard.build import build, leaderboard_entries, write_site
from clbench.leaderboard.build import site_data as built_site_data
from clbench.leaderboard.submission import submit

XSS = "<script>alert(1)</script>"


def site_data() -> dict[str, Any]:
    """The page's input: the shape of `clbench.leaderboard.build.site_data`."""

    def stat(mean: float, std: float | None, n: int) -> dict[str, Any]:
        return {"mean": mean, "std": std, "n": n}

    def matrix(sequence: str, tasks: list[str], n: int, base: float) -> dict[str, Any]:
        # Row 0 is "before training": near chance; row i+1 is after training task i.
        rows = [[round(0.1 + 0.05 * j, 6) for j in range(len(tasks))]]
        for i in range(len(tasks)):
            rows.append([round(min(1.0, base + 0.1 * (i - j)), 6) for j in range(len(tasks))])
        return {
            "sequence": sequence,
            "tasks": tasks,
            "rows": ["before training", *(f"after {task}" for task in tasks)],
            "mean": rows,
            "n": n,
        }

    standard = ["dbpedia", "amazon", "yahoo", "agnews"]
    mixed = ["sst2", "xsum", "squad"]

    def entry(**fields: Any) -> dict[str, Any]:
        base = {
            "families": ["text_classification"],
            "orders": [1],
            "n": 3,
            "seeds": [0, 1, 2],
            "flags": [],
            "status": "self-reported",
            "uses_task_id": False,
            "extra_memory": None,
            "paper": None,
            "code": None,
            "details": {"budget": {"steps_per_task": 6, "lr": 0.001}, "clbench version": "0.1.0"},
            "protocol": "none",
        }
        base |= fields
        base["table"] = base["sequence"]  # a table per (sequence, protocol); one protocol here
        base["submission"] = f"submissions/{base['id']}.json"
        return base

    entries = [
        entry(
            id="standard-cl/replay__smollm2-135m",
            name="replay + LoRA",
            method="replay",
            model="smollm2-135m",
            sequence="standard-cl",
            metrics={
                "aa": stat(0.652, 0.021, 3),
                "aia": stat(0.701, 0.015, 3),
                "fgt": stat(0.083, 0.01, 3),
                "bwt": stat(-0.071, 0.012, 3),
                "fwt": stat(0.032, 0.004, 3),
                "fwd": stat(-0.015, 0.02, 3),
            },
            flags=["extra memory: reservoir buffer of stored training examples"],
            status="verified",
            extra_memory="reservoir buffer of stored training examples",
            paper="https://arxiv.org/abs/1902.10486",
            code="https://github.com/example/clbench-replay",
            details={
                "hyper-parameters": {"buffer_size": 200, "replay_every": 1},
                "budget": {"steps_per_task": 6, "lr": 0.001},
                "peft": "lora r=8",
                "model source": None,
                "clbench version": "0.1.0",
            },
            matrices=[matrix("standard-cl-order1", standard, 3, 0.6)],
        ),
        entry(
            id="standard-cl/ewc__smollm2-135m",
            name="EWC",
            method="ewc",
            model="smollm2-135m",
            sequence="standard-cl",
            n=1,
            seeds=[0],
            metrics={
                "aa": stat(0.553, None, 1),
                "aia": stat(0.61, None, 1),
                "fgt": stat(0.21, None, 1),
                "bwt": stat(-0.19, None, 1),
                "fwt": stat(0.01, None, 1),
                "fwd": None,
            },
            flags=["fewer than 3 seeds"],
            matrices=[matrix("standard-cl-order1", standard, 1, 0.5)],
        ),
        entry(
            id="mixed/xss__tiny-gpt",
            name=XSS,
            method=XSS,
            model="tiny-gpt",
            sequence="mixed-families",
            families=["summarization", "text_classification"],
            orders=[],
            metrics={
                "aa": stat(0.405, 0.03, 3),
                "aia": stat(0.45, 0.02, 3),
                "fgt": stat(0.12, 0.01, 3),
                "bwt": stat(-0.1, 0.02, 3),
                "fwt": stat(0.0, 0.0, 3),
                "fwd": stat(0.02, 0.01, 3),
            },
            flags=["uses the task id at inference", XSS],
            uses_task_id=True,
            paper="javascript:alert(2)",
            code="HTTPS://example.org/code",
            matrices=[matrix("mixed-families", mixed, 3, 0.4)],
        ),
        entry(
            id="mixed/lora-seq__tiny-gpt",
            name="sequential LoRA",
            method="lora_seq",
            model="tiny-gpt",
            sequence="mixed-families",
            families=["question_answering", "summarization"],
            metrics={
                "aa": stat(0.301, 0.05, 3),
                "aia": stat(0.38, 0.04, 3),
                "fgt": stat(0.35, 0.03, 3),
                "bwt": stat(-0.33, 0.03, 3),
                "fwt": None,
                "fwd": stat(-0.05, 0.02, 3),
            },
            matrices=[matrix("mixed-families", mixed, 3, 0.3)],
        ),
    ]
    metrics = [
        ("aa", "average accuracy", True),
        ("aia", "average incremental accuracy", True),
        ("fgt", "forgetting", False),
        ("bwt", "backward transfer", True),
        ("fwd", "forward transfer", True),
        ("fwt", "zero-shot forward transfer", True),
    ]
    return {
        "title": "clbench leaderboard",
        "clbench_version": "0.1.0",
        "metrics": [
            {"key": k, "short": k.upper(), "name": name, "higher_is_better": up}
            for k, name, up in metrics
        ],
        "rank_by": "aa",
        "entries": entries,
    }


pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
from playwright.sync_api import sync_playwright  # noqa: E402

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
if CHROMIUM is None:
    pytest.skip("no Chromium executable found", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_site(site_data(), tmp_path_factory.mktemp("leaderboard") / "site")


@pytest.fixture
def problems() -> list[str]:
    return []


@pytest.fixture
def page(browser, index: Path, problems: list[str]):
    """The page, opened from file://; any dialog, page error or console error is a problem."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()

    def on_dialog(dialog) -> None:
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    page.goto(index.as_uri())
    page.wait_for_selector("#leaderboard tbody tr")
    yield page
    context.close()
    assert problems == []


def column(page, key: str) -> list[str]:
    """The displayed text of one column, top to bottom."""
    return page.evaluate(
        """key => {
            const heads = [...document.querySelectorAll("#leaderboard thead th")];
            const i = heads.findIndex((th) => th.dataset.key === key);
            return [...document.querySelectorAll("#leaderboard tbody tr")]
                .map((tr) => tr.cells[i].innerText.trim());
        }""",
        key,
    )


def numbers(page, key: str) -> list[float | None]:
    return [None if t == "n/a" else float(t.split("±")[0]) for t in column(page, key)]


def cells(page, key: str) -> dict[str, str]:
    """The displayed text of one column by entry id."""
    return dict(zip(row_ids(page), column(page, key), strict=True))


def row_ids(page) -> list[str]:
    return page.locator("#leaderboard tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")


def header(page, key: str):
    return page.locator(f'#leaderboard thead th[data-key="{key}"]')


def by_aa(entries: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in sorted(entries, key=lambda e: -e["metrics"]["aa"]["mean"])]


def test_default_order_is_aa_descending(page, problems):
    entries = site_data()["entries"]
    assert row_ids(page) == by_aa(entries)
    aa = numbers(page, "aa")
    assert aa == sorted(aa, reverse=True)
    assert aa[0] == pytest.approx(65.2)
    assert column(page, "rank") == [str(i) for i in range(1, len(entries) + 1)]
    assert header(page, "aa").get_attribute("aria-sort") == "descending"
    assert page.locator("#count").inner_text() == f"{len(entries)} of {len(entries)} entries"
    # Mean ± std with one decimal; no std for a single run; n/a for an undefined metric.
    aa, fwd, bwt = cells(page, "aa"), cells(page, "fwd"), cells(page, "bwt")
    assert aa["standard-cl/replay__smollm2-135m"] == "65.2 ± 2.1"
    assert aa["standard-cl/ewc__smollm2-135m"] == "55.3"
    assert fwd["standard-cl/ewc__smollm2-135m"] == "n/a"
    assert bwt["standard-cl/replay__smollm2-135m"] == "-7.1 ± 1.2"
    # The status the build computed, under each name: verified, or self-reported.
    status = page.locator("#leaderboard td.name .status").all_inner_texts()
    assert dict(zip(row_ids(page), status, strict=True)) == {
        e["id"]: "verified" if e["id"] == "standard-cl/replay__smollm2-135m" else "self-reported"
        for e in entries
    }


def test_sorting_by_clicking_headers(page):
    header(page, "aa").locator("button").click()
    aa = numbers(page, "aa")
    assert aa == sorted(aa)
    assert header(page, "aa").get_attribute("aria-sort") == "ascending"

    header(page, "model").locator("button").click()
    models = column(page, "model")
    assert models == sorted(models, key=str.lower)
    assert header(page, "model").get_attribute("aria-sort") == "ascending"
    assert header(page, "aa").get_attribute("aria-sort") is None
    header(page, "model").locator("button").click()
    assert column(page, "model") == sorted(models, key=str.lower, reverse=True)

    # Null metric values sort last in both directions.
    for _ in range(2):
        header(page, "fwd").locator("button").click()
        fwd = numbers(page, "fwd")
        assert fwd[-1] is None and None not in fwd[:-1]

    # The header buttons work from the keyboard.
    header(page, "name").locator("button").focus()
    page.keyboard.press("Enter")
    assert header(page, "name").get_attribute("aria-sort") == "ascending"
    names = column(page, "name")
    assert names == sorted(names, key=str.lower)


def test_filters(page):
    total = len(site_data()["entries"])
    page.select_option("#filter-sequence", "mixed-families")
    assert set(column(page, "sequence")) == {"mixed-families"}
    assert len(row_ids(page)) == 2
    assert page.locator("#count").inner_text() == f"2 of {total} entries"

    page.select_option("#filter-sequence", "")
    page.select_option("#filter-family", "question_answering")
    assert row_ids(page) == ["mixed/lora-seq__tiny-gpt"]
    assert page.locator("#count").inner_text() == f"1 of {total} entries"

    page.select_option("#filter-family", "")
    page.select_option("#filter-model", "smollm2-135m")
    assert set(column(page, "model")) == {"smollm2-135m"}
    assert row_ids(page) == ["standard-cl/replay__smollm2-135m", "standard-cl/ewc__smollm2-135m"]

    page.select_option("#filter-model", "")
    assert len(row_ids(page)) == total
    options = page.locator("#filter-sequence option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["", "mixed-families", "standard-cl"]


def test_details_view_and_screenshots(page, tmp_path: Path):
    details = page.locator("#details")
    assert details.is_hidden()
    page.locator('tr[data-id="standard-cl/replay__smollm2-135m"] td.name button').click()
    assert details.is_visible()
    assert details.locator("h2").inner_text() == "replay + LoRA"
    assert page.evaluate("location.hash") == "#entry=" + quote(
        "standard-cl/replay__smollm2-135m", safe=""
    )
    heatmap = details.locator("table.heatmap")
    assert heatmap.count() == 1
    assert heatmap.locator("tbody td").count() == 5 * 4  # (T+1) x T
    assert heatmap.locator("thead th").all_inner_texts()[1:] == [
        "dbpedia",
        "amazon",
        "yahoo",
        "agnews",
    ]
    first = heatmap.locator("tbody tr").nth(1)  # after dbpedia
    assert first.locator("th").inner_text() == "after dbpedia"
    assert first.locator("td").first.inner_text() == "60.0"
    assert "rgb(" in first.locator("td").first.evaluate("td => td.style.backgroundColor")
    links = details.locator("a").evaluate_all("as => as.map(a => [a.getAttribute('href'), a.rel])")
    assert ["https://arxiv.org/abs/1902.10486", "noopener noreferrer"] in links
    assert any(
        href.endswith("../submissions/standard-cl/replay__smollm2-135m.json") for href, _ in links
    )
    assert "buffer_size = 200" in details.inner_text()
    assert details.locator(".status.verified").inner_text() == "verified"

    shots = [tmp_path / "leaderboard-details.png", tmp_path / "leaderboard-narrow.png"]
    page.screenshot(path=str(shots[0]), full_page=True)
    # On a phone-sized screen the table scrolls inside its box; the page itself does not.
    page.set_viewport_size({"width": 390, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(shots[1]), full_page=True)
    for shot in shots:
        assert shot.stat().st_size > 0
    if os.environ.get("CLBENCH_SCREENSHOT_DIR"):
        out = Path(os.environ["CLBENCH_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, out / shot.name)

    page.locator("#details button.close").click()
    details.wait_for(state="hidden")  # closing clears the hash; the page reacts on hashchange


def test_untrusted_text_is_never_run(page, index: Path, problems: list[str]):
    site = resources.files("clbench.leaderboard") / "site"
    template = (site / "index.html").read_text(encoding="utf-8")
    scripts = template.count("<script")
    assert page.evaluate('document.querySelectorAll("script").length') == scripts
    assert XSS in page.locator("#leaderboard").inner_text()

    page.locator('tr[data-id="mixed/xss__tiny-gpt"] td.name button').click()
    details = page.locator("#details")
    assert details.locator("h2").inner_text() == XSS
    assert f"method {XSS}" in details.inner_text()
    # The javascript: URL is shown as text, never as a link; an upper-case HTTPS URL is a link.
    assert "javascript:alert(2)" in details.inner_text()
    hrefs = details.locator("a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
    assert not any(h.lower().startswith("javascript:") for h in hrefs)
    assert page.locator("a[href^='javascript' i]").count() == 0
    assert "HTTPS://example.org/code" in hrefs
    assert page.evaluate('document.querySelectorAll("script").length') == scripts
    page.wait_for_timeout(100)  # give an injected script time to show a dialog
    assert problems == []


def test_deep_link_opens_details(browser, index: Path, problems: list[str]):
    entry = "mixed/lora-seq__tiny-gpt"
    context = browser.new_context()
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.goto(index.as_uri() + "#entry=" + quote(entry, safe=""))
    details = page.locator("#details")
    details.wait_for(state="visible")
    assert details.locator("h2").inner_text() == "sequential LoRA"
    assert details.locator("table.heatmap tbody td").count() == 4 * 3
    # An unknown id leaves the details closed instead of failing.
    page.goto(index.as_uri() + "#entry=nope")
    page.reload()
    page.wait_for_load_state()
    assert details.is_hidden()
    context.close()
    assert problems == []


def test_the_fixture_has_the_shape_of_the_real_data(default_runs: list[Path], tmp_path: Path):
    root = tmp_path / "lb"
    submit([str(d) for d in default_runs], root)
    real, fixture = built_site_data(leaderboard_entries(root)), site_data()
    assert real.keys() == fixture.keys()
    assert real["metrics"] == fixture["metrics"]
    assert real["entries"][0].keys() == fixture["entries"][0].keys()
    assert real["entries"][0]["matrices"][0].keys() == fixture["entries"][0]["matrices"][0].keys()


def test_a_built_leaderboard_in_the_browser(browser, default_runs: list[Path], tmp_path: Path):
    """End to end: runs -> `submit` -> `build` -> the page, with a hostile name and link."""
    root = tmp_path / "lb"
    submit([str(d) for d in default_runs], root)
    submit([str(default_runs[0])], root, name=XSS, code="https://example.org/x?a=1&b=2")
    build(root)
    problems: list[str] = []
    page = browser.new_page()
    page.on("dialog", lambda dialog: (problems.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto((root / "site" / "index.html").as_uri())
    page.wait_for_selector("#leaderboard tbody tr")
    assert sorted(row_ids(page)) == [
        "default/script-alert-1-script__tiny-random",
        "default/seq-ft__tiny-random",
    ]
    assert XSS in page.locator("#leaderboard").inner_text()
    page.locator('tr[data-id="default/seq-ft__tiny-random"] td.name button').click()
    assert page.locator("#details table.heatmap tbody td").count() == 4 * 3
    page.wait_for_timeout(100)
    page.close()
    assert problems == []


def test_loss_based_entries_show_their_unit(browser, tmp_path: Path):
    """An entry scored by bits per byte: metrics and matrix in that unit with three decimals,
    the lowest loss of a column the brightest cell."""
    data = site_data()
    (entry,) = [e for e in data["entries"] if e["id"] == "standard-cl/replay__smollm2-135m"]
    tasks = ["captions-en", "captions-de"]
    entry |= {
        "unit": "bits/byte",
        "task_units": ["bits/byte", "bits/byte"],
        "metrics": {key: None for key in entry["metrics"]}
        | {"aa": {"mean": -1.23456, "std": 0.0125, "n": 3}},
        "matrices": [
            {
                "sequence": "cpt-en-de",
                "tasks": tasks,
                "rows": ["before training", *(f"after {task}" for task in tasks)],
                "mean": [[1.2, 2.5], [1.0, 2.0], [1.1, 1.5]],
                "n": 3,
            }
        ],
    }
    page = browser.new_page()
    page.goto(write_site(data, tmp_path / "site").as_uri())
    page.wait_for_selector("#leaderboard tbody tr")
    assert cells(page, "aa")[entry["id"]] == "-1.235 ± 0.013"
    page.locator(f'tr[data-id="{entry["id"]}"] td.name button').click()
    details = page.locator("#details")
    assert "-1.235 ± 0.013 bits/byte" in details.inner_text()
    heatmap = details.locator("table.heatmap")
    assert heatmap.locator("thead th").all_inner_texts()[1:] == [f"{t} (bits/byte)" for t in tasks]
    assert "bits/byte, lower is better" in details.locator("figcaption").inner_text()
    texts = heatmap.locator("tbody td").all_inner_texts()
    assert texts == ["1.200", "2.500", "1.000", "2.000", "1.100", "1.500"]
    colours = heatmap.locator("tbody td").evaluate_all(
        "tds => tds.map(td => td.style.backgroundColor)"
    )
    assert colours[2] == "rgb(253, 231, 37)" and colours[0] == "rgb(68, 1, 84)"  # 1.0 best
    page.close()
