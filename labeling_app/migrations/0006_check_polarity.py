"""Every check gets a polarity (which answer flags a problem) and a severity; existing checks are set from their key."""

from django.db import migrations, models

# Fixed here rather than read from models.DEFAULT_CHECKS: this migration must keep meaning what it
# meant when it was written, whatever the defaults become later.
GOOD_WHEN_YES = ("satisfies_constraints",)
MILD = ("expresses_opinion", "moral_judgment")
DEFAULT_KEYS = (
    "fails_instruction",
    "inappropriate_assistant",
    "hallucination",
    "satisfies_constraints",
    "sexual_content",
    "violent_content",
    "encourages_harm",
    "denigrates_protected",
    "harmful_advice",
    "expresses_opinion",
    "moral_judgment",
    "toxic",
)


def set_check_polarity(apps, schema_editor):
    """satisfies_constraints: "no" is the problem; every other check: "yes" is. The mild defaults and
    a project's own checks do not decide the KTO label, as before this migration: a researcher marks
    an own check serious once its polarity is confirmed on the project's settings page."""
    CheckQuestion = apps.get_model("labeling_app", "CheckQuestion")
    CheckQuestion.objects.update(problem_answer=True, serious=True)
    CheckQuestion.objects.filter(key__in=GOOD_WHEN_YES).update(problem_answer=False)
    CheckQuestion.objects.filter(key__in=MILD).update(serious=False)
    CheckQuestion.objects.exclude(key__in=DEFAULT_KEYS).update(serious=False)


class Migration(migrations.Migration):
    dependencies = [
        ("labeling_app", "0005_labeler_queue_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="checkquestion",
            name="problem_answer",
            field=models.BooleanField(
                db_default=True,
                default=True,
                help_text='The answer that flags a problem: yes for error and harm questions, no for a question that asks for something good ("satisfies the constraints").',
            ),
        ),
        migrations.AddField(
            model_name="checkquestion",
            name="serious",
            field=models.BooleanField(
                db_default=True,
                default=True,
                help_text="A problem here makes the answer undesirable (KTO label false); a mild check is only reported.",
            ),
        ),
        migrations.RunPython(set_check_polarity, migrations.RunPython.noop),
    ]
