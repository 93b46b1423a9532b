"""Re-importing the same data changes nothing: identical completions, tasks, labels and demonstrations are reused or skipped."""

from __future__ import annotations


import pytest
from django.core.management import call_command

from labeling_app.models import Annotation, Completion, Demonstration, Prompt, RankingTask, Rating
from labeling_app.services.imports import import_file
from tests.labeling_app.researcher_fixtures import write_jsonl


def counts() -> dict:
    return {
        "prompts": Prompt.objects.count(),
        "completions": Completion.objects.count(),
        "tasks": RankingTask.objects.count(),
        "labels": Annotation.objects.count(),
        "ratings": Rating.objects.count(),
        "demonstrations": Demonstration.objects.count(),
    }


def test_completions_file_twice_reuses_completions_and_skips_tasks(k4, tmp_path):
    rows = [
        {"prompt": f"Q{i}", "completions": [f"a{i}", f"b{i}", {"text": f"c{i}", "model": "m2"}, f"d{i}"], "model": "m1"}
        for i in range(20)
    ]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    first = import_file(project=k4, kind="completions", path=path)
    assert (first.tasks_created, first.completions_created, first.completions_reused, first.tasks_existing) == (
        20,
        80,
        0,
        0,
    )
    before = counts()
    again = import_file(project=k4, kind="completions", path=path)
    assert counts() == before
    assert (again.prompts_existing, again.completions_created, again.completions_reused) == (20, 0, 80)
    assert (again.tasks_created, again.tasks_existing) == (0, 20)


def test_the_same_completions_in_another_order_are_the_same_task(k4, tmp_path):
    import_file(
        project=k4,
        kind="completions",
        path=write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Q", "completions": list("abcd")}]),
    )
    result = import_file(
        project=k4,
        kind="completions",
        path=write_jsonl(tmp_path / "b.jsonl", [{"prompt": "Q", "completions": list("dcba")}]),
    )
    assert result.tasks_existing == 1 and RankingTask.objects.count() == 1


def test_a_different_model_name_is_a_different_completion(k4, tmp_path):
    import_file(
        project=k4,
        kind="completions",
        path=write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Q", "completions": list("abcd"), "model": "m1"}]),
    )
    result = import_file(
        project=k4,
        kind="completions",
        path=write_jsonl(tmp_path / "b.jsonl", [{"prompt": "Q", "completions": list("abcd"), "model": "m2"}]),
    )
    assert (result.completions_created, result.tasks_created) == (4, 1)
    assert Completion.objects.count() == 8 and RankingTask.objects.count() == 2


def test_pairwise_preferences_twice_skip_identical_labels(k2, tmp_path):
    rows = [{"prompt": f"P{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "chosen_rating": 6} for i in range(20)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    first = import_file(project=k2, kind="preferences", path=path, source_name="hh")
    assert first.annotations_created == 20
    before = counts()
    again = import_file(project=k2, kind="preferences", path=path, source_name="hh")
    assert counts() == before
    assert (again.annotations_created, again.annotations_skipped, again.tasks_existing) == (0, 20, 20)
    assert all(t.overlap == t.submitted_count == 1 for t in RankingTask.objects.all())


def test_grouped_rankings_twice_skip_and_a_different_ranking_is_a_second_label_on_the_same_task(k4, tmp_path):
    row = {
        "prompt": "Rank",
        "completions": list("wxyz"),
        "ranks": [1, 2, 3, 3],
        "ratings": [7, 5, 2, None],
        "checks": {"toxic": [False, False, True, None]},
    }
    path = write_jsonl(tmp_path / "g.jsonl", [row])
    import_file(project=k4, kind="preferences", path=path, source_name="grouped")
    before = counts()
    assert import_file(project=k4, kind="preferences", path=path, source_name="grouped").annotations_skipped == 1
    assert counts() == before
    other = write_jsonl(tmp_path / "g2.jsonl", [dict(row, ranks=[2, 1, 3, 3])])
    result = import_file(project=k4, kind="preferences", path=other, source_name="grouped")
    assert (result.annotations_created, result.tasks_created, result.completions_reused) == (1, 0, 4)
    task = RankingTask.objects.get()
    assert task.overlap == task.submitted_count == 2  # still closed: out of the labelers' queue


def test_another_source_adds_its_own_label_to_the_same_task(k2, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "P", "chosen": "a", "rejected": "b"}])
    import_file(project=k2, kind="preferences", path=path, source_name="one")
    result = import_file(project=k2, kind="preferences", path=path, source_name="two")
    assert (result.annotations_created, result.tasks_existing) == (1, 1)
    assert RankingTask.objects.get().annotations.count() == 2


def test_identical_lines_inside_one_file_are_skipped_after_the_first(k2, tmp_path):
    row = {"prompt": "P", "chosen": "a", "rejected": "b"}
    result = import_file(
        project=k2, kind="preferences", path=write_jsonl(tmp_path / "p.jsonl", [row, row]), source_name="s"
    )
    assert (result.annotations_created, result.annotations_skipped) == (1, 1)
    assert [line for line, _ in result.identical_lines] == [2]


def test_preference_labels_do_not_land_on_an_open_labeling_task(k2, tmp_path):
    import_file(
        project=k2,
        kind="completions",
        path=write_jsonl(tmp_path / "c.jsonl", [{"prompt": "P", "completions": ["a", "b"]}]),
    )
    result = import_file(
        project=k2,
        kind="preferences",
        path=write_jsonl(tmp_path / "p.jsonl", [{"prompt": "P", "chosen": "a", "rejected": "b"}]),
        source_name="s",
    )
    assert (result.completions_reused, result.tasks_created, result.annotations_created) == (2, 1, 1)
    open_task = RankingTask.objects.filter(annotations__isnull=True).get()
    assert open_task.overlap == 1 and open_task.submitted_count == 0


def test_demonstrations_twice_are_skipped(k4, tmp_path):
    rows = [{"prompt": f"D{i}", "completion": f"ideal {i}"} for i in range(20)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    import_file(project=k4, kind="demonstrations", path=path)
    before = counts()
    again = import_file(project=k4, kind="demonstrations", path=path)
    assert counts() == before
    assert (again.demonstrations_created, again.demonstrations_skipped) == (0, 20)
    # a different answer to the same prompt is a new demonstration
    more = import_file(
        project=k4,
        kind="demonstrations",
        path=write_jsonl(tmp_path / "e.jsonl", [{"prompt": "D0", "completion": "other"}]),
    )
    assert more.demonstrations_created == 1


def test_a_written_demonstration_with_the_same_text_is_not_imported_again(k4, tmp_path):
    prompt = Prompt.objects.create(project=k4, text="Hello")
    Demonstration.objects.create(prompt=prompt, text="Hi there.", source="written")
    result = import_file(
        project=k4,
        kind="demonstrations",
        path=write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Hello", "completion": "Hi there."}]),
    )
    assert result.demonstrations_skipped == 1 and Demonstration.objects.count() == 1


def test_prompts_file_twice(k4, tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"P{i}"} for i in range(20)])
    import_file(project=k4, kind="prompts", path=path)
    again = import_file(project=k4, kind="prompts", path=path)
    assert (again.prompts_created, again.prompts_existing) == (0, 20) and Prompt.objects.count() == 20


def test_a_completion_given_twice_on_one_line_is_a_line_error(k4, tmp_path):
    from labeling_app.services.imports import ImportRejected

    path = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "Q", "completions": ["a", "b", "a", "d"]}])
    with pytest.raises(
        ImportRejected, match=r"line 1, field completions\[2\]: is the same completion as completions\[0\]"
    ):
        import_file(project=k4, kind="completions", path=path)


def test_the_command_line_and_the_page_say_what_was_reused_and_skipped(
    k2, tmp_path, capsys, client, researcher, settings
):
    settings.IMPORT_DIR = str(tmp_path / "imports")
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"P{i}", "chosen": "a", "rejected": "b"} for i in range(3)])
    call_command("import_data", str(path), project="Pairs", kind="preferences", source="hh")
    call_command("import_data", str(path), project="Pairs", kind="preferences", source="hh")
    out = capsys.readouterr().out.split("imported into")[-1]
    assert (
        "3 identical labels from hh skipped" in out and "6 completions reused" in out and "3 tasks already there" in out
    ), out
    client.force_login(researcher)
    page = client.post(
        f"/projects/{k2.pk}/import/",
        {"kind": "preferences", "source_name": "hh", "file": open(path, "rb")},
        follow=True,
    ).content.decode()
    assert "3 identical labels from hh skipped" in page and "6 completions reused" in page, page
    assert Annotation.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_file_twice_at_the_same_time_imports_once(k2, tmp_path):
    """Two imports of one file racing: the unique indexes make the second reuse what the first wrote."""
    import threading

    from django.db import connection

    rows = [{"prompt": f"P{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(50)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    results, errors = [], []

    def run():
        try:
            results.append(import_file(project=k2, kind="preferences", path=path, source_name="race"))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert Annotation.objects.count() == 50 and Completion.objects.count() == 100 and RankingTask.objects.count() == 50
    assert sorted(r.annotations_created for r in results) == [0, 50]
