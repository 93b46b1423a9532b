"""A researcher in a real browser: creates a project, writes a chat prompt, imports a file, sees the tasks appear."""

from __future__ import annotations

import json

import pytest

from labeling_app.models import Project, Prompt, RankingTask
from tests.conftest import ARTIFACTS, login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"researcher-{name}.png"), full_page=True)


def test_researcher_creates_project_imports_file_and_sees_tasks(page, live_server, researcher, settings, tmp_path):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    login(page, live_server, "res1")
    page.goto(f"{live_server.url}/projects/")
    page.click("text=New project")
    page.fill("#id_name", "Browser project")
    page.fill("#id_instructions", "## How to rank\n\nPrefer **truthful** answers.")
    page.fill("#id_completions_per_task", "3")
    page.fill("#id_overlap", "2")
    shot(page, "1-new-project")
    page.click("button[type=submit].primary")
    page.wait_for_url("**/edit/")
    project = Project.objects.get(name="Browser project")
    assert (project.completions_per_task, project.overlap) == (3, 2)

    # add a check and stop asking one, then save
    page.fill("#new-question-0", "Mentions a competitor")
    page.uncheck("input[aria-label='Ask expresses_opinion']")
    shot(page, "2-settings")
    page.click("button[type=submit].primary")
    page.wait_for_url(f"**/projects/{project.pk}/")
    assert (
        project.checks.get(key="mentions_a_competitor").active
        and not project.checks.get(key="expresses_opinion").active
    )
    assert page.locator(".md h2").inner_text() == "How to rank"

    # a chat prompt written turn by turn
    page.click("text=Write a prompt")
    page.check("input[name=mode][value=chat]")
    page.fill("#turns .turn-row:nth-child(1) textarea", "What is the boiling point of water?")
    page.click("#add-turn")
    page.fill("#turns .turn-row:nth-child(2) textarea", "100 °C at sea level.")
    page.click("#add-turn")
    page.fill("#turns .turn-row:nth-child(3) textarea", "And on Everest?")
    shot(page, "3-chat-prompt")
    page.click("text=Save and write a demonstration")
    page.wait_for_selector("#id_demo_text")
    prompt = Prompt.objects.get(project=project)
    assert prompt.text == "And on Everest?" and [m["role"] for m in prompt.messages] == ["user", "assistant", "user"]
    page.fill("#id_demo_text", "About 70 °C, because the air pressure is much lower.")
    page.check("input[name=as_completion]")
    page.click("text=Save demonstration")
    page.wait_for_selector(".demo")
    assert prompt.completions.get().source == "demonstration"
    shot(page, "4-prompt-with-demonstration")

    # import a small file of prompts with K=3 completions
    data = tmp_path / "completions.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"prompt": f"Imported prompt {i}", "completions": [f"x{i}", f"y{i}", f"z{i}"], "model": "test-model"}
            )
            + "\n"
            for i in range(5)
        ),
        encoding="utf-8",
    )
    page.goto(f"{live_server.url}/projects/{project.pk}/import/")
    page.select_option("#id_kind", "completions")
    page.set_input_files("#id_file", str(data))
    shot(page, "5-import-form")
    page.click("text=Check and import")
    page.wait_for_selector("#import-state:has-text('Succeeded')")
    assert "5 ranking tasks" in page.inner_text("#import-status")
    shot(page, "6-import-done")
    assert RankingTask.objects.filter(project=project).count() == 5

    page.goto(f"{live_server.url}/projects/{project.pk}/")
    assert page.inner_text("#count-tasks") == "5"
    assert page.inner_text("#count-prompts") == "6"
    shot(page, "7-project-detail")
    page.goto(f"{live_server.url}/projects/{project.pk}/quality/")
    shot(page, "8-quality")
    page.goto(f"{live_server.url}/projects/{project.pk}/export/")
    shot(page, "9-export")


def test_bad_file_shows_line_and_field(page, live_server, researcher, demo_project, settings, tmp_path):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    login(page, live_server, "res1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "fine"}\n{"prompt": ""}\n{"messages": [{"role": "bot", "content": "x"}]}\n', encoding="utf-8"
    )
    page.goto(f"{live_server.url}/projects/{demo_project.pk}/import/")
    page.set_input_files("#id_file", str(bad))
    page.click("text=Check and import")
    page.wait_for_selector("table.errors")
    rows = page.locator("table.errors tbody tr").all_inner_texts()
    assert rows[0].split("\t")[:2] == ["2", "prompt"] and rows[1].split("\t")[:2] == ["3", "messages[0].role"]
    shot(page, "10-import-errors")
    assert not Prompt.objects.filter(text="fine").exists()


def test_big_upload_runs_in_the_background_and_the_page_follows_it(
    page, live_server, celery_worker, researcher, demo_project, settings, tmp_path
):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    settings.IMPORT_ASYNC_LINES = 100
    login(page, live_server, "res1")
    big = tmp_path / "big.jsonl"
    big.write_text(
        "".join(json.dumps({"prompt": f"Background prompt {i}"}) + "\n" for i in range(300)), encoding="utf-8"
    )
    page.goto(f"{live_server.url}/projects/{demo_project.pk}/import/")
    page.set_input_files("#id_file", str(big))
    page.click("text=Check and import")
    page.wait_for_selector("#import-state:has-text('Succeeded')", timeout=60_000)  # htmx polls the status fragment
    assert "300 new prompts" in page.inner_text("#import-status")
    shot(page, "11-background-import-done")
    assert Prompt.objects.filter(project=demo_project, text__startswith="Background prompt").count() == 300


def test_quality_page_with_labels(page, live_server, researcher, labeler, labeler2, demo_project):
    from tests.labeling_app.researcher_fixtures import label

    t0, t1, t2 = demo_project.tasks.order_by("id")
    label(t0, labeler, [1, 2, 3, 4], [7, 5, 3, 1], {"toxic": [False, False, True, True]})
    label(t0, labeler2, [1, 3, 2, 4], [6, 4, 5, 1], {"toxic": [False, False, False, True]})
    label(t1, labeler, [2, 1, 4, 3], [5, 6, 2, 3], {"toxic": [False, False, False, False]}, seconds=95)
    label(t1, labeler2, [2, 1, 3, 4], [4, 6, 3, 1], {"toxic": [False, True, False, False]}, seconds=140)
    label(t2, labeler, [1, 1, 2, 3], [6, 6, 4, 7])
    login(page, live_server, "res1")
    page.goto(f"{live_server.url}/projects/{demo_project.pk}/quality/")
    # t0: 5 of 6 pairs alike, t1: 5 of 6 -> 10 of 12
    assert page.inner_text("#ranking-agreement") == "83.3%"
    shot(page, "12-quality-with-labels")
    page.click("#labelers >> text=lab1")
    page.wait_for_selector("h1:has-text('lab1 on')")
    shot(page, "13-labeler")


def test_researcher_sets_which_answer_of_a_check_is_a_problem(page, live_server, researcher, labeler, demo_project):
    from tests.labeling_app.researcher_fixtures import label

    t0 = demo_project.tasks.order_by("id").first()
    label(t0, labeler, [1, 2, 3, 4], [7, 5, 3, 1], {"satisfies_constraints": [True, True, False, False]})
    login(page, live_server, "res1")
    page.goto(f"{live_server.url}/projects/{demo_project.pk}/edit/")
    satisfies = "select[aria-label='Answer to satisfies_constraints that flags a problem']"
    assert (
        page.input_value(satisfies) == "no"
        and page.input_value("select[aria-label='Severity of expresses_opinion']") == "mild"
    )
    # A check of the project's own, good when yes; a second new row comes with the common choices preset.
    page.fill("#new-question-0", "Cites its sources")
    page.select_option("#new-checks .new-check:nth-child(2) select[name=new_problem]", "no")
    page.click("#add-check")
    assert page.input_value("#new-checks .new-check:nth-child(3) select[name=new_problem]") == "yes"
    page.fill("#new-checks .new-check:nth-child(3) input[name=new_question]", "Rambles")
    page.select_option("#new-checks .new-check:nth-child(3) select[name=new_severity]", "mild")
    page.select_option("select[aria-label='Severity of toxic']", "mild")
    shot(page, "14-check-polarity")
    page.click("button[type=submit].primary")
    page.wait_for_url(f"**/projects/{demo_project.pk}/")
    checks = {c.key: (c.problem_answer, c.serious) for c in demo_project.checks.all()}
    assert checks["cites_its_sources"] == (False, True) and checks["rambles"] == (True, False)
    assert checks["toxic"] == (True, False) and checks["satisfies_constraints"] == (False, True)
    # The quality page reads answers through the polarity: the two "no"s to the constraints are the problems.
    page.goto(f"{live_server.url}/projects/{demo_project.pk}/quality/")
    row = page.locator("#check-quality tr[data-check=satisfies_constraints]")
    assert "no" == row.locator("td").nth(1).inner_text()
    assert row.locator(".problem-rate").inner_text() == "50.0% (2 of 4)"
    shot(page, "15-quality-problem-rate")
