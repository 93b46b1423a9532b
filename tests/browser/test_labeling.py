"""The labeling page in headless Chromium: keyboard only, mouse with drag and drop, reload, errors, lease, its module scripts."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from labeling_app.models import Annotation, Assignment, CheckAnswer, Completion, Project, Prompt, Rating
from labeling_app.selectors.exports import kto_records
from labeling_app.selectors.labels import LabelFilters
from labeling_app.services.annotations import annotation_submit
from labeling_app.services.leases import task_assign_next
from labeling_app.services.projects import project_create, task_create
from tests.conftest import ARTIFACTS, login, make_user
from tests.labeling_app.labeling_helpers import valid_ratings

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHECKS = [
    ("fails_instruction", "Fails to follow the instruction"),
    ("hallucination", "Hallucination / fabricated information"),
    ("toxic", "Toxic: rude, disrespectful or hateful language"),
]
# "Satisfies the constraints" is good when yes: its problem answer is "no".
POLARITY_CHECKS = [
    ("fails_instruction", "Fails to follow the instruction"),
    ("satisfies_constraints", "Satisfies the constraints provided in the instruction", False),
    ("toxic", "Toxic: rude, disrespectful or hateful language"),
]
INSTRUCTIONS = "Rate each answer from **1** (terrible) to **7** (excellent).\n\n- Answer every check\n- Ties are fine"


def make_project(name: str, checks) -> Project:
    researcher = make_user("res-b", "researcher")
    make_user("lab-b", "labeler")
    project = project_create(
        name=name, user=researcher, completions_per_task=3, overlap=1, instructions=INSTRUCTIONS, checks=checks
    )
    answers = [
        (
            "Explain what a hash table is in two sentences.",
            [
                "A hash table stores key-value pairs in an array, using a hash function to turn each key into an index.",
                "A hash table is a sorted tree invented by Alan Turing in 1921.",
                "It maps keys to values through a hash function, giving average constant-time lookups.",
            ],
        ),
        (
            "What is the capital of Australia?",
            ["Canberra.", "Sydney, since 1788.", "The capital of Australia is Canberra."],
        ),
    ]
    for text, completions in answers:
        prompt = Prompt.objects.create(project=project, text=text)
        task_create(
            project=project,
            prompt=prompt,
            completions=[Completion.objects.create(prompt=prompt, text=c, source="imported") for c in completions],
        )
    return project


@pytest.fixture
def project(db):
    return make_project("Browser project", CHECKS)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"labeling-{name}.png"), full_page=True)


def open_first_task(page, live_server) -> Annotation:
    login(page, live_server, "lab-b")
    page.goto(f"{live_server.url}/label/")
    page.click("button.lt-start")
    page.wait_for_url(re.compile(r"/label/tasks/\d+/$"))
    page.wait_for_selector(".lt-item")
    return Annotation.objects.get(labeler__username="lab-b", status="draft")


def stored(annotation: Annotation) -> dict[int, tuple[int, int, dict[str, bool]]]:
    """completion id -> (likert, rank, {check key: answer}) as stored in PostgreSQL."""
    out = {}
    for r in Rating.objects.filter(annotation=annotation):
        answers = {
            a.check_question.key: a.value for a in CheckAnswer.objects.filter(rating=r).select_related("check_question")
        }
        out[r.completion_id] = (r.likert, r.rank, answers)
    return out


def test_label_a_whole_task_with_the_keyboard_only(page, live_server, project):
    login(page, live_server, "lab-b")
    page.goto(f"{live_server.url}/label/")
    shot(page, "home")
    for _ in range(30):  # Tab to "Start labeling", press Enter
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('lt-start')"):
            break
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/label/tasks/\d+/$"))
    page.wait_for_selector(".lt-item")
    ann = Annotation.objects.get(labeler__username="lab-b", status="draft")
    a, b, c = ann.shown_order

    page.keyboard.press("?")
    assert page.locator("#help-dialog").is_visible()
    shot(page, "keyboard-help")
    page.keyboard.press("Escape")
    page.keyboard.press("5")  # A: 5, then its three checks; j moves on to B
    for key in "yny":
        page.keyboard.press(key)
    page.keyboard.press("j")
    page.keyboard.press("3")  # B: 3, checks n n n
    for key in "nnn":
        page.keyboard.press(key)
    page.keyboard.press("j")
    page.keyboard.press("6")  # C: 6, Shift+N answers all its checks "no"
    page.keyboard.press("Shift+N")
    page.keyboard.press("r")  # ranking suggested from ratings: C, A, B
    assert page.evaluate("document.activeElement.dataset.completion") == str(c)
    page.keyboard.press("ArrowDown")  # focus A
    page.keyboard.press("Shift+ArrowUp")  # A joins C: a tie at rank 1
    assert page.locator(".lt-tier").count() == 2
    page.keyboard.press("Shift+C")
    page.keyboard.type("done by keyboard")
    shot(page, "keyboard-before-submit")
    page.keyboard.press("Control+Enter")
    page.wait_for_function(f"!location.pathname.endsWith('/tasks/{ann.task_id}/')")
    shot(page, "keyboard-next-task")

    ann.refresh_from_db()
    assert ann.status == "submitted" and ann.comment == "done by keyboard"
    assert stored(ann) == {
        a: (5, 1, {"fails_instruction": True, "hallucination": False, "toxic": True}),
        b: (3, 2, {"fails_instruction": False, "hallucination": False, "toxic": False}),
        c: (6, 1, {"fails_instruction": False, "hallucination": False, "toxic": False}),
    }
    assert page.locator("#today-count").inner_text() == "1"


def rate_with_mouse(page, cid: int, likert: int, answers: str) -> None:
    page.click(f'#comp-{cid} label.lt-pill:has(input[value="{likert}"])')
    for key, yn in zip([k for k, _ in CHECKS], answers):
        page.click(
            f'#comp-{cid} .lt-check[data-check="{key}"] label:has(input[value="{"yes" if yn == "y" else "no"}"])'
        )


def test_label_with_the_mouse_and_drag_a_tie_into_the_ranking(page, live_server, project):
    ann = open_first_task(page, live_server)
    a, b, c = ann.shown_order
    rate_with_mouse(page, a, 2, "nyn")
    rate_with_mouse(page, b, 7, "nnn")
    rate_with_mouse(page, c, 4, "nnn")
    # Suggested: B, C, A. Drag A onto C's row: C and A tie at rank 2.
    page.drag_and_drop(f'.lt-item[data-completion="{a}"]', '.lt-tier[data-tier="1"]')
    assert page.locator(".lt-tier").count() == 2
    assert page.locator(".lt-tier.is-tie .lt-item").count() == 2
    shot(page, "mouse-tie")
    page.click("#submit-btn")
    # A (rated 2) now ties with C (rated 4): no contradiction, so no question is asked.
    page.wait_for_function(f"!location.pathname.endsWith('/tasks/{ann.task_id}/')")
    ann.refresh_from_db()
    assert ann.status == "submitted"
    assert {cid: v[:2] for cid, v in stored(ann).items()} == {a: (2, 2), b: (7, 1), c: (4, 2)}
    assert stored(ann)[a][2] == {"fails_instruction": False, "hallucination": True, "toxic": False}


def test_a_contradicting_ranking_asks_to_confirm(page, live_server, project):
    ann = open_first_task(page, live_server)
    a, b, c = ann.shown_order
    rate_with_mouse(page, a, 2, "nnn")
    rate_with_mouse(page, b, 7, "nnn")
    rate_with_mouse(page, c, 4, "nnn")
    # Drag A (rated 2) into the gap above the top row: A alone at rank 1, above B (7) and C (4).
    page.drag_and_drop(f'.lt-item[data-completion="{a}"]', '.lt-gap[data-gap="0"]')
    assert page.locator(".lt-tier").first.locator(f'.lt-item[data-completion="{a}"]').count() == 1
    page.click("#submit-btn")
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    assert "Response A is ranked above Response B but rated lower (2 vs 7)" in dialog.inner_text()
    shot(page, "mouse-contradiction")
    page.click("#confirm-yes")
    page.wait_for_function(f"!location.pathname.endsWith('/tasks/{ann.task_id}/')")
    assert {cid: v[1] for cid, v in stored(Annotation.objects.get(pk=ann.pk)).items()} == {a: 1, b: 2, c: 3}


def test_reload_mid_task_restores_the_draft(page, live_server, project):
    ann = open_first_task(page, live_server)
    a, b, c = ann.shown_order
    rate_with_mouse(page, a, 6, "ny")
    page.click(f'#comp-{b} label.lt-pill:has(input[value="3"])')
    page.fill("#comment", "half way there")
    page.wait_for_function("document.getElementById('save-state').textContent.startsWith('Draft saved')")
    draft = Annotation.objects.get(pk=ann.pk).draft
    assert draft["comment"] == "half way there"
    assert {r["completion"]: r["likert"] for r in draft["ratings"]} == {a: 6, b: 3, c: None}
    # Drop the browser's copy too: what comes back is the server's draft.
    page.evaluate("localStorage.clear()")
    page.reload()
    page.wait_for_selector(".lt-item")
    assert page.is_checked(f'input[name="likert-{a}"][value="6"]')
    assert page.is_checked(f'input[name="likert-{b}"][value="3"]')
    assert page.is_checked(f'input[name="check-{a}-hallucination"][value="yes"]')
    assert not page.is_checked(f'input[name="check-{a}-toxic"][value="yes"]')
    assert page.input_value("#comment") == "half way there"
    shot(page, "reload-restored")
    ann.refresh_from_db()
    assert ann.status == "draft" and not Rating.objects.filter(annotation=ann).exists()


def test_an_invalid_submission_shows_the_error_next_to_the_field(page, live_server, project):
    ann = open_first_task(page, live_server)
    a, b, c = ann.shown_order
    rate_with_mouse(page, a, 5, "nnn")
    rate_with_mouse(page, c, 5, "nn")  # C's "toxic" left open, B not rated at all
    page.click("#submit-btn")
    b_error = page.locator(f'[data-error-for="ratings.{b}.likert"]')
    b_error.wait_for(state="visible")
    assert b_error.inner_text() == "Rate Response B from 1 (terrible) to 7 (excellent)."
    toxic_error = page.locator(f'[data-error-for="ratings.{c}.checks.toxic"]')
    assert "Response C: answer yes or no to “Toxic" in toxic_error.inner_text()
    # The message sits inside the completion it is about.
    assert page.locator(f'#comp-{b} [data-error-for="ratings.{b}.likert"]').is_visible()
    assert page.locator("#form-error").is_visible()
    shot(page, "invalid-errors")
    ann.refresh_from_db()
    assert ann.status == "draft" and not Rating.objects.filter(annotation=ann).exists()
    assert {r["completion"]: r["likert"] for r in ann.draft["ratings"]} == {a: 5, b: None, c: 5}
    # Fixing the field clears its message; the submission then goes through.
    rate_with_mouse(page, b, 5, "nnn")
    assert not b_error.is_visible()
    page.click(f'#comp-{c} .lt-check[data-check="toxic"] label:has(input[value="no"])')
    page.click("#submit-btn")
    page.wait_for_function(f"!location.pathname.endsWith('/tasks/{ann.task_id}/')")
    ann.refresh_from_db()
    assert ann.status == "submitted" and Rating.objects.filter(annotation=ann).count() == 3


def test_skip_asks_for_a_reason_and_moves_on(page, live_server, project):
    ann = open_first_task(page, live_server)
    page.keyboard.press("s")
    dialog = page.locator("#skip-dialog")
    dialog.wait_for(state="visible")
    page.click("#skip-confirm")  # no reason yet: told what to do, nothing stored
    reason_error = dialog.locator('[data-error-for="reason"]')
    reason_error.wait_for(state="visible")
    assert "Say why you skip" in reason_error.inner_text()
    assert Annotation.objects.get(pk=ann.pk).status == "draft"
    page.click('#skip-dialog label:has(input[value="The prompt is unclear or broken"])')
    shot(page, "skip-dialog")
    page.click("#skip-confirm")
    page.wait_for_function(f"!location.pathname.endsWith('/tasks/{ann.task_id}/')")
    ann.refresh_from_db()
    assert ann.status == "skipped" and ann.skip_reason == "The prompt is unclear or broken"


def tiers(page) -> list[list[int]]:
    """The ranking as shown: completion ids per row, best row first."""
    return page.eval_on_selector_all(
        ".lt-tier", "rows => rows.map(r => Array.from(r.querySelectorAll('.lt-item'), i => +i.dataset.completion))"
    )


def current_response(page) -> int:
    return int(page.get_attribute(".lt-completion.is-current", "data-completion"))


def focused_item(page) -> str | None:
    return page.evaluate(
        "document.activeElement.classList.contains('lt-item') ? document.activeElement.dataset.completion : null"
    )


def test_every_page_script_loads_as_a_javascript_module(page, live_server, project):
    scripts = {}
    page.on(
        "response",
        lambda r: (
            scripts.__setitem__(r.url.split("/static/")[1], r.headers.get("content-type", ""))
            if "/static/js/" in r.url
            else None
        ),
    )
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    open_first_task(page, live_server)
    page.wait_for_load_state("networkidle")
    assert page.get_attribute('script[src*="label_task.js"]', "type") == "module"
    expected = {"js/label_task.js"} | {
        f"js/labeling/{name}.js"
        for name in (
            "api",
            "compact",
            "dom",
            "drafts",
            "errors",
            "keyboard",
            "lease",
            "progress",
            "ranking",
            "ratings",
            "submit",
        )
    }
    assert set(scripts) == expected
    # A module script with any other MIME type is refused by the browser.
    assert all(kind.split(";")[0] in ("text/javascript", "application/javascript") for kind in scripts.values()), (
        scripts
    )
    assert errors == []


def test_responses_with_j_k_and_arrows_and_checks_with_y_n(page, live_server, project):
    ann = open_first_task(page, live_server)
    a, b, c = ann.shown_order
    assert current_response(page) == a
    page.keyboard.press("j")
    assert current_response(page) == b
    page.keyboard.press("ArrowDown")
    assert current_response(page) == c
    page.keyboard.press("j")  # already the last: stays
    assert current_response(page) == c
    page.keyboard.press("k")
    assert current_response(page) == b
    page.keyboard.press("ArrowUp")
    assert current_response(page) == a
    # y/n answer the highlighted check and highlight the next open one.
    assert page.get_attribute(f"#comp-{a} .lt-check.is-current", "data-check") == "fails_instruction"
    page.keyboard.press("y")
    assert page.is_checked(f'input[name="check-{a}-fails_instruction"][value="yes"]')
    assert page.get_attribute(f"#comp-{a} .lt-check.is-current", "data-check") == "hallucination"
    page.keyboard.press("n")
    assert page.is_checked(f'input[name="check-{a}-hallucination"][value="no"]')
    assert page.get_attribute(f"#comp-{a} .lt-check.is-current", "data-check") == "toxic"
    # Unrated, so answering the last check keeps A current.
    page.keyboard.press("n")
    assert current_response(page) == a and page.locator(".lt-check.is-current").count() == 0
    page.keyboard.press("y")  # nothing left to answer: said, not stored
    assert page.inner_text("#rank-live") == "All checks of Response A are answered."
    assert not page.is_checked(f'input[name="check-{a}-toxic"][value="yes"]')
    # On a focused radio the arrows choose the neighbouring value, as browsers do, instead of changing the response.
    page.click(f'#comp-{b} label.lt-pill:has(input[value="4"])')
    assert current_response(page) == b
    page.keyboard.press("ArrowRight")
    assert page.is_checked(f'input[name="likert-{b}"][value="5"]')
    page.keyboard.press("ArrowDown")
    assert page.is_checked(f'input[name="likert-{b}"][value="6"]')
    assert current_response(page) == b
    assert tiers(page) == [[b], [a, c]]  # the suggestion follows the ratings
    # In the comment box keys are text; Esc leaves it and the shortcuts work again.
    page.keyboard.press("Shift+C")
    page.keyboard.type("jk 7")
    assert page.input_value("#comment") == "jk 7" and current_response(page) == b
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    assert current_response(page) == c
    page.keyboard.press("2")
    assert page.is_checked(f'input[name="likert-{c}"][value="2"]')
    assert "Response C rated 2" in page.inner_text("#rank-live")
    shot(page, "navigate-responses")


def test_shift_arrows_move_a_response_through_a_tie(page, live_server, project):
    ann = open_first_task(page, live_server)
    a, b, c = ann.shown_order
    for key in ("7", "j", "5", "j", "3"):
        page.keyboard.press(key)
    assert tiers(page) == [[a], [b], [c]]
    page.keyboard.press("r")
    assert focused_item(page) == str(a)
    steps = [
        ("Shift+ArrowDown", [[b, a], [c]], "Response A: rank 1 of 2, tied with B"),
        ("Shift+ArrowDown", [[b], [a], [c]], "Response A: rank 2 of 3"),
        ("Shift+J", [[b], [c, a]], "Response A: rank 2 of 2, tied with C"),
        ("Shift+ArrowDown", [[b], [c], [a]], "Response A: rank 3 of 3"),
        ("Shift+ArrowDown", [[b], [c], [a]], "Response A is already at the bottom."),
        ("Shift+K", [[b], [c, a]], "Response A: rank 2 of 2, tied with C"),
    ]
    for key, expected, spoken in steps:
        page.keyboard.press(key)
        assert tiers(page) == expected, key
        assert page.inner_text("#rank-live") == spoken, key
        assert focused_item(page) == str(a), key  # the moved response keeps the focus
    assert page.inner_text("#rank-source") == "Your ranking." and page.is_visible("#rank-reset")
    # Without Shift the arrows move the focus; in the ranking digits and r do nothing.
    page.keyboard.press("ArrowUp")
    assert focused_item(page) == str(c)
    page.keyboard.press("k")
    assert focused_item(page) == str(b)
    page.keyboard.press("5")
    page.keyboard.press("r")
    assert focused_item(page) == str(b) and page.is_checked(f'input[name="likert-{c}"][value="3"]')
    # A new rating no longer rearranges a ranking arranged by hand.
    page.click(f'#comp-{c} label.lt-pill:has(input[value="1"])')
    assert tiers(page) == [[b], [c, a]]
    shot(page, "shift-arrows-tie")
    # B (5) above A (7): asked to confirm; Ctrl+Enter does nothing while the question is open.
    page.keyboard.press("Control+Enter")
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    page.keyboard.press("Control+Enter")
    assert dialog.is_visible()
    page.click("#confirm-no")
    assert not dialog.is_visible() and focused_item(page) == str(b)
    # Reset to ratings: the suggestion again, and it follows the ratings again.
    page.click("#rank-reset")
    assert tiers(page) == [[a], [b], [c]]
    assert page.inner_text("#rank-source") == "Suggested from your ratings." and not page.is_visible("#rank-reset")
    assert Annotation.objects.get(pk=ann.pk).status == "draft"


def test_reload_restores_this_browsers_newer_draft_with_its_ranking(page, live_server, project):
    ann = open_first_task(page, live_server)
    a, b, c = ann.shown_order
    for key in ("6", "j", "4", "j", "2"):
        page.keyboard.press(key)
    page.wait_for_function("document.getElementById('save-state').textContent.startsWith('Draft saved')")
    # From here the server is out of reach: the changes live only in this browser.
    page.route("**/draft/", lambda route: route.abort())
    page.keyboard.press("Shift+N")
    page.keyboard.press("r")
    page.keyboard.press("Shift+ArrowDown")  # A ties with B
    page.keyboard.press("Shift+C")
    page.keyboard.type("offline note")
    page.wait_for_function("document.getElementById('save-state').textContent.startsWith('Offline')")
    assert Annotation.objects.get(pk=ann.pk).draft["comment"] == ""
    page.unroute("**/draft/")
    page.reload()
    page.wait_for_selector(".lt-item")
    assert tiers(page) == [[b, a], [c]]
    assert page.inner_text("#rank-source") == "Your ranking." and page.is_visible("#rank-reset")
    assert page.input_value("#comment") == "offline note"
    assert all(page.is_checked(f'input[name="check-{c}-{key}"][value="no"]') for key, _ in CHECKS)
    assert page.is_checked(f'input[name="likert-{b}"][value="4"]')
    assert current_response(page) == c
    # The restored copy goes back to the server at once.
    page.wait_for_function("document.getElementById('save-state').textContent.startsWith('Draft saved')")
    draft = Annotation.objects.get(pk=ann.pk).draft
    assert draft["comment"] == "offline note" and draft["ui"]["tiers"] == [[b, a], [c]]
    assert {r["completion"]: r["rank"] for r in draft["ratings"]} == {a: 1, b: 1, c: 2}
    shot(page, "reload-local-draft")


def test_help_opens_from_its_button_and_with_question_mark(page, live_server, project):
    open_first_task(page, live_server)
    help_dialog = page.locator("#help-dialog")
    page.click("#help-open")
    assert help_dialog.is_visible()
    page.keyboard.press("j")  # the open dialog keeps the keys
    page.click("#help-close")
    assert not help_dialog.is_visible()
    page.keyboard.press("r")
    page.keyboard.press("?")  # from the ranking too
    assert help_dialog.is_visible()
    page.keyboard.press("Escape")
    assert not help_dialog.is_visible()


def test_a_lost_lease_shows_a_banner(page, live_server, project):
    ann = open_first_task(page, live_server)
    # The lease runs out and another labeler finishes the task (overlap 1) meanwhile.
    Assignment.objects.filter(task_id=ann.task_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    other = make_user("lab-other", "labeler")
    lease = task_assign_next(project=project, labeler=other)
    assert lease.task_id == ann.task_id
    annotation_submit(task=lease.task, labeler=other, ratings=valid_ratings(lease.task, other))
    assert page.is_hidden("#lease-banner")
    # The page renews its lease whenever it becomes visible again.
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    banner = page.locator("#lease-banner")
    banner.wait_for(state="visible")
    assert banner.inner_text() == (
        "Your lease expired and other labelers have finished this task. Take the next task. Your draft is kept."
    )
    shot(page, "lease-lost")


def background(page, selector: str) -> str:
    return page.eval_on_selector(selector, "e => getComputedStyle(e).backgroundColor")


def test_shift_n_answers_no_problems_by_each_checks_polarity(page, live_server):
    project = make_project("Polarity project", POLARITY_CHECKS)
    ann = open_first_task(page, live_server)
    a, b, c = ann.shown_order
    row = lambda cid, key: f'#comp-{cid} .lt-check[data-check="{key}"]'  # noqa: E731
    # Each check marks its problem answer, in text too (⚠ and "(a problem)" in the radio's name).
    assert page.get_attribute(f"{row(a, 'satisfies_constraints')} .lt-problem input", "value") == "no"
    assert page.get_attribute(f"{row(a, 'toxic')} .lt-problem input", "value") == "yes"
    assert page.locator(row(a, "satisfies_constraints")).get_by_role("radio", name="No (a problem)").count() == 1
    assert page.locator(row(a, "toxic")).get_by_role("radio", name="Yes (a problem)").count() == 1
    page.keyboard.press("?")
    assert "No problems" in page.inner_text("#help-dialog")
    page.keyboard.press("Escape")

    page.keyboard.press("7")  # A: 7, Shift+N: no problems
    page.keyboard.press("Shift+N")
    assert page.is_checked(f'input[name="check-{a}-satisfies_constraints"][value="yes"]')
    assert page.is_checked(f'input[name="check-{a}-fails_instruction"][value="no"]')
    assert page.is_checked(f'input[name="check-{a}-toxic"][value="no"]')
    assert page.inner_text("#rank-live") == "Response A: 3 open checks answered, no problems."
    # The good answer chosen looks good, a problem answer chosen looks like one.
    good, bad = "rgb(230, 244, 234)", "rgb(253, 232, 231)"
    assert background(page, f'{row(a, "satisfies_constraints")} label:has(input[value="yes"])') == good
    assert background(page, f'{row(a, "toxic")} label:has(input[value="no"])') == good
    page.keyboard.press("j")  # B: 3, "yes" to the highlighted first check, then Shift+N for the rest
    page.keyboard.press("3")
    page.keyboard.press("y")
    page.keyboard.press("Shift+N")
    assert background(page, f'{row(b, "fails_instruction")} label:has(input[value="yes"])') == bad
    assert page.is_checked(f'input[name="check-{b}-satisfies_constraints"][value="yes"]')
    page.keyboard.press("j")  # C: 5, answered one by one: n n n ("no" to the constraints is a problem)
    page.keyboard.press("5")
    for key in "nnn":
        page.keyboard.press(key)
    assert background(page, f'{row(c, "satisfies_constraints")} label:has(input[value="no"])') == bad
    page.keyboard.press("Shift+N")  # nothing open: nothing changes
    assert page.is_checked(f'input[name="check-{c}-satisfies_constraints"][value="no"]')
    shot(page, "polarity-shift-n")
    page.keyboard.press("Control+Enter")
    page.wait_for_function(f"!location.pathname.endsWith('/tasks/{ann.task_id}/')")

    ann.refresh_from_db()
    assert ann.status == "submitted"
    assert {cid: v[2] for cid, v in stored(ann).items()} == {
        a: {"fails_instruction": False, "satisfies_constraints": True, "toxic": False},
        b: {"fails_instruction": True, "satisfies_constraints": True, "toxic": False},
        c: {"fails_instruction": False, "satisfies_constraints": False, "toxic": False},
    }
    # The answer rated 7 with "no problems" is desirable; the others each flag one serious problem.
    kto = {r["rating"]: (r["label"], r["failed_checks"]) for r in kto_records(LabelFilters(project_ids=[project.pk]))}
    assert kto == {7: (True, []), 3: (False, ["fails_instruction"]), 5: (False, ["satisfies_constraints"])}


def test_j_after_the_last_check_goes_to_the_next_response_and_letters_jump(page, live_server, project):
    ann = open_first_task(page, live_server)
    a, b, c = ann.shown_order
    page.keyboard.press("5")  # A rated, then its last check answered: A stays current
    for key in "nny":
        page.keyboard.press(key)
    assert current_response(page) == a
    assert page.inner_text("#rank-live") == "Response A: all checks answered. j: next response."
    page.keyboard.press("j")  # so the next j goes to B, not past it
    assert current_response(page) == b
    page.keyboard.press("4")
    page.keyboard.press("Shift+N")
    page.keyboard.press("j")
    assert current_response(page) == c
    # a–i go straight to a response; a letter past the last one only says so.
    page.keyboard.press("a")
    assert current_response(page) == a
    page.keyboard.press("c")
    assert current_response(page) == c and page.evaluate("document.activeElement.id") == f"comp-{c}"
    page.keyboard.press("d")
    assert current_response(page) == c and page.inner_text("#rank-live") == "There is no Response D."
    page.keyboard.press("b")
    page.keyboard.press("6")
    assert page.is_checked(f'input[name="likert-{b}"][value="6"]')
    # From the ranking too; the comment has Shift+C, and in it letters are text.
    page.keyboard.press("r")
    page.keyboard.press("a")
    assert current_response(page) == a and focused_item(page) is None
    page.keyboard.press("Shift+C")
    page.keyboard.type("abc")
    assert page.input_value("#comment") == "abc" and current_response(page) == a
    page.keyboard.press("Escape")
    page.keyboard.press("?")
    help_text = page.inner_text("#help-dialog")
    assert "Go to response A … I" in help_text and "Write a comment" in help_text
    shot(page, "letters-and-j")


def toggle(page, cid: int, key: str) -> str:
    return f'#comp-{cid} .lt-toggle[data-check="{key}"]'


def test_compact_checks_one_row_of_toggles_remembered_per_labeler(page, live_server):
    make_project("Twelve checks", None)  # the twelve default checks
    ann = open_first_task(page, live_server)
    a, b, c = ann.shown_order
    full_height = page.eval_on_selector(f"#comp-{a}", "e => e.getBoundingClientRect().height")
    assert page.is_visible(f'#comp-{a} .lt-check[data-check="toxic"]') and not page.is_visible(toggle(page, a, "toxic"))
    page.keyboard.press("v")
    assert page.get_attribute("#compact-toggle", "aria-pressed") == "true"
    assert not page.is_visible(f'#comp-{a} .lt-check[data-check="toxic"]')
    assert page.locator(f"#comp-{a} .lt-toggle:visible").count() == 12
    # The twelve checks shrink to a strip of toggles: the card is less than half as tall.
    assert page.eval_on_selector(f"#comp-{a}", "e => e.getBoundingClientRect().height") < full_height / 2
    # Shown by its key in words, named by its question and problem answer, pressed when that answer is chosen.
    assert page.inner_text(f"{toggle(page, a, 'fails_instruction')} .lt-short") == "fails instruction"
    fails = page.locator(f"#comp-{a} .lt-toggles").get_by_role(
        "button", name="Fails to follow the correct instruction / task: yes is a problem (not answered)", exact=True
    )
    assert fails.count() == 1 and fails.get_attribute("aria-pressed") == "false"

    page.keyboard.press("6")
    page.keyboard.press("y")  # y/n still answer the highlighted check, shown on its toggle
    assert page.get_attribute(toggle(page, a, "fails_instruction"), "data-state") == "problem"
    assert page.get_attribute(toggle(page, a, "inappropriate_assistant"), "class").endswith("is-current")
    page.click(toggle(page, a, "hallucination"))  # an open check: the first press flags it
    assert page.get_attribute(toggle(page, a, "hallucination"), "aria-pressed") == "true"
    page.click(toggle(page, a, "satisfies_constraints"))  # its problem answer is "no"
    assert page.is_checked(f'input[name="check-{a}-satisfies_constraints"][value="no"]')
    page.click(toggle(page, a, "satisfies_constraints"))  # a second press: the other answer
    assert page.get_attribute(toggle(page, a, "satisfies_constraints"), "data-state") == "fine"
    assert page.is_checked(f'input[name="check-{a}-satisfies_constraints"][value="yes"]')
    page.click(f"#comp-{a} .lt-rest-fine")  # the rest: no problems
    assert page.locator(f'#comp-{a} .lt-toggle[data-state="open"]').count() == 0
    assert page.locator(f'#comp-{a} .lt-toggle[aria-pressed="true"]').count() == 2
    shot(page, "compact-checks")

    # Remembered for this labeler in this browser: a reload (and the next task) opens compact, answers restored.
    page.wait_for_function("document.getElementById('save-state').textContent.startsWith('Draft saved')")
    assert page.evaluate("localStorage.getItem('rlhf-compact:lab-b')") == "1"
    page.reload()
    page.wait_for_selector(".lt-item")
    assert page.evaluate("document.documentElement.classList.contains('lt-compact')")
    assert page.get_attribute(toggle(page, a, "hallucination"), "data-state") == "problem"
    assert page.get_attribute(toggle(page, a, "toxic"), "data-state") == "fine"
    assert page.get_attribute(toggle(page, b, "toxic"), "data-state") == "open"
    # A check left open shows in full with its message when the submission is refused.
    for key in ("b", "5", "N", "c", "4"):
        page.keyboard.press(key if key != "N" else "Shift+N")
    page.click(toggle(page, c, "toxic"))
    page.keyboard.press("Control+Enter")
    error = page.locator(f'[data-error-for="ratings.{c}.checks.fails_instruction"]')
    error.wait_for(state="visible")
    assert page.is_visible(f'#comp-{c} .lt-check[data-check="fails_instruction"]')
    shot(page, "compact-error")
    page.click("#compact-toggle")  # the button too; off again: a row per check, same answers
    assert page.is_visible(f'#comp-{a} .lt-check[data-check="toxic"]')
    assert page.is_checked(f'input[name="check-{a}-hallucination"][value="yes"]')
    assert page.evaluate("localStorage.getItem('rlhf-compact:lab-b')") == "0"


def test_progress_today_this_session_and_left(page, live_server, project):
    # A task submitted earlier today by this labeler in another project: "today" counts the whole day.
    labeler = User.objects.get(username="lab-b")
    other = project_create(
        name="Other project", user=User.objects.get(username="res-b"), completions_per_task=2, checks=CHECKS
    )
    prompt = Prompt.objects.create(project=other, text="Earlier")
    task_create(
        project=other,
        prompt=prompt,
        completions=[Completion.objects.create(prompt=prompt, text=t, source="imported") for t in ("one", "two")],
    )
    earlier = task_assign_next(project=other, labeler=labeler)
    annotation_submit(task=earlier.task, labeler=labeler, ratings=valid_ratings(earlier.task, labeler))
    ann = open_first_task(page, live_server)
    progress = lambda: [page.inner_text(f"#{n}-count") for n in ("today", "session", "left")]  # noqa: E731
    assert progress() == ["1", "0", "1"]  # left: the project's other task; the one on screen is taken
    shot(page, "progress-start")
    for key in ("5", "N", "j", "4", "N", "j", "3", "N"):
        page.keyboard.press(key if key != "N" else "Shift+N")
    page.keyboard.press("Control+Enter")
    page.wait_for_function(f"!location.pathname.endsWith('/tasks/{ann.task_id}/')")
    page.wait_for_selector(".lt-item")
    assert progress() == ["2", "1", "0"]
    shot(page, "progress-after-one")
    # A new browser session (another tab) starts its own count; the day's stays.
    second = page.context.browser.new_context(viewport={"width": 1280, "height": 900})
    other_tab = second.new_page()
    login(other_tab, live_server, "lab-b")
    other_tab.goto(page.url)
    other_tab.wait_for_selector(".lt-item")
    assert [other_tab.inner_text(f"#{n}-count") for n in ("today", "session", "left")] == ["2", "0", "0"]
    second.close()


LIST_ANSWER = "1.\nPreheat the oven to 220 C.\n2. Mix flour, water, salt and yeast.\n3. Knead for ten minutes."


def test_long_and_multi_line_answers_stay_inside_their_cards(page, live_server):
    researcher = make_user("res-b", "researcher")
    make_user("lab-b", "labeler")
    project = project_create(name="Long answers", user=researcher, completions_per_task=3, overlap=1, checks=CHECKS)
    prompt = Prompt.objects.create(project=project, text="How do I bake bread?")
    texts = [
        LIST_ANSWER,
        "See https://example.com/" + "a" * 400 + " " + "and knead it well " * 40,
        "- flour\n- water\n\n- salt",
    ]
    task_create(
        project=project,
        prompt=prompt,
        completions=[
            Completion.objects.create(prompt=prompt, text=t, source="model", sampling={"finish_reason": "stop"})
            for t in texts
        ],
    )
    ann = open_first_task(page, live_server)
    by_text = dict(zip(texts, Completion.objects.filter(prompt=prompt).order_by("id").values_list("id", flat=True)))
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"), (
        "no sideways scroll"
    )
    card = page.eval_on_selector(".lt-ranking", "e => e.getBoundingClientRect().right")
    rights = page.eval_on_selector_all(".lt-item", "els => els.map(e => e.getBoundingClientRect().right)")
    assert len(rights) == 3 and all(r <= card for r in rights)
    for cid in ann.shown_order:
        text_box = page.eval_on_selector(f"#comp-{cid} .lt-text", "e => [e.scrollWidth, e.clientWidth]")
        assert text_box[0] <= text_box[1], "a long word wraps inside the answer's card"
    snippet = lambda cid: page.inner_text(f'.lt-item[data-completion="{cid}"] .lt-snippet')  # noqa: E731
    # One line, list markers next to their items, cut with an ellipsis where the row ends.
    assert (
        snippet(by_text[LIST_ANSWER])
        == "1. Preheat the oven to 220 C. 2. Mix flour, water, salt and yeast. 3. Knead for ten minutes."
    )
    assert snippet(by_text[texts[2]]) == "- flour - water - salt"
    long_snippet = f'.lt-item[data-completion="{by_text[texts[1]]}"] .lt-snippet'
    assert (
        page.eval_on_selector(long_snippet, "e => e.scrollWidth > e.clientWidth && getComputedStyle(e).textOverflow")
        == "ellipsis"
    )
    assert page.eval_on_selector(long_snippet, "e => e.getBoundingClientRect().height") < 30
    assert not page.locator(".lt-cut").count()
    shot(page, "long-answers")


def test_an_answer_cut_at_the_length_limit_is_marked(page, live_server):
    researcher = make_user("res-b", "researcher")
    make_user("lab-b", "labeler")
    project = project_create(name="Generated", user=researcher, completions_per_task=2, overlap=1, checks=CHECKS)
    prompt = Prompt.objects.create(project=project, text="Tell me a story.")
    sampling = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64, "seed": 0}
    cut = Completion.objects.create(
        prompt=prompt,
        text="Once upon a time there was a",
        source="model",
        sampling={**sampling, "finish_reason": "length"},
    )
    whole = Completion.objects.create(
        prompt=prompt, text="The end.", source="model", sampling={**sampling, "finish_reason": "stop"}
    )
    task_create(project=project, prompt=prompt, completions=[cut, whole])
    open_first_task(page, live_server)
    assert page.inner_text(f"#comp-{cut.pk} .lt-cut") == "cut at the length limit"
    assert page.locator(f"#comp-{whole.pk} .lt-cut").count() == 0
    # In the ranking too, where the answers are compared.
    assert page.inner_text(f'.lt-item[data-completion="{cut.pk}"] .lt-cut') == "cut"
    assert "cut at the length limit" in page.get_attribute(f'.lt-item[data-completion="{cut.pk}"]', "aria-label")
    assert page.locator(f'.lt-item[data-completion="{whole.pk}"] .lt-cut').count() == 0
    shot(page, "cut-at-length")
