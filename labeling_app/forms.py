"""The researcher's forms, and `call_service`: a service's ServiceError shown beside the form fields it names."""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

from django import forms

from config.errors import ServiceError
from labeling_app.models import CheckQuestion, Completion, QueueOrder
from labeling_app.selectors.labels import DateRange
from labeling_app.selectors.queue import QueueSource
from labeling_app.selectors.tasks import AGREEMENT_CHOICES, STATUS_CHOICES, TaskFilters
from labeling_app.services.projects import CheckEdit, NewCheck

T = TypeVar("T")


def call_service(form: forms.Form, service: Callable[..., T], /, **kwargs) -> T | None:
    """`service(**kwargs)`; when it raises ServiceError, None, and each of its messages is added to `form`
    beside the field it names (one the form does not have goes to the form's non-field errors)."""
    try:
        return service(**kwargs)
    except ServiceError as exc:
        for field, messages in exc.errors.items():
            for message in messages:
                form.add_error(field if field in form.fields else None, message)
        return None


PROBLEM_CHOICES = [("yes", "Yes"), ("no", "No")]
SEVERITY_CHOICES = [("serious", "Serious"), ("mild", "Mild")]


class ProjectForm(forms.Form):
    """A project's settings; given the project's checks, also per check its question, which answer is a
    problem, its severity and an "asked" box."""

    SETTINGS = (
        "name",
        "instructions",
        "completions_per_task",
        "overlap",
        "lease_minutes",
        "overlap_max",
        "disagreement_threshold",
    )

    name = forms.CharField(max_length=200)
    instructions = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 12, "class": "mono"}),
        help_text="Markdown. Shown to labelers above every task.",
    )
    completions_per_task = forms.IntegerField(
        min_value=2,
        max_value=9,
        initial=4,
        label="K (completions per task)",
        help_text="2 to 9. Fixed once the project has tasks.",
    )
    overlap = forms.IntegerField(min_value=1, max_value=20, initial=1, help_text="Labels wanted per task.")
    lease_minutes = forms.IntegerField(
        min_value=1,
        max_value=24 * 60,
        initial=30,
        label="Lease (minutes)",
        help_text="How long a labeler holds a task before it returns to the pool.",
    )
    # Adaptive overlap. Not required: left empty, the maximum is the overlap (off) and the threshold stays as stored
    # (the service checks the ranges, so the API and this page give the same messages).
    overlap_max = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=20,
        label="Maximum overlap",
        help_text="A task whose labels disagree gets one more label, up to this many. Empty or equal to the overlap: "
        "never more. With overlap 1 the label is compared with the newest reward model's scores, if any.",
    )
    disagreement_threshold = forms.FloatField(
        required=False,
        label="Disagreement threshold",
        help_text="Share of completion pairs two labels order differently (above 0, at most 1) from which a task "
        "gets another label; 0.34 = more than a third of the pairs.",
    )

    QUEUE_ORDER_HELP = (
        "Which open task a labeler gets next. Tasks other labelers already started always come first, so they get "
        "finished. Oldest / newest: by when the task was made. Fewest labels: the task with the fewest submitted "
        "labels. Chosen source first: the tasks of the source picked below, then the rest oldest first. Reward model "
        "least sure first: the tasks whose completions the newest score job's reward model is least sure how to "
        "order (score differences small against its posterior standard deviation, learnt from this project's "
        "rankings); tasks it has not scored come after, oldest first."
    )

    def __init__(
        self, *args, checks: Sequence[CheckQuestion] = (), sources: Sequence[QueueSource] | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.checks = list(checks)
        if sources is not None:  # an existing project: its queue order, with the sources of its tasks to put first
            # Not required: a request without it (an older page, a script) keeps the stored order.
            self.fields["queue_order"] = forms.ChoiceField(
                choices=QueueOrder.choices, label="Queue order", required=False, help_text=self.QUEUE_ORDER_HELP
            )
            self.fields["queue_source"] = forms.ChoiceField(
                required=False,
                label="Source to put first",
                choices=[("", "(none: pick one for 'Chosen source first')")] + [(s.key, s.label) for s in sources],
                help_text="Only with 'Chosen source first'. The sources (policy versions, imported models, "
                "demonstrations) of this project's open tasks.",
            )
        for check in self.checks:
            # Not required here: an emptied question is the service's to refuse, with its own message.
            self.fields[f"check-{check.pk}-question"] = forms.CharField(required=False, initial=check.question)
            self.fields[f"check-{check.pk}-active"] = forms.BooleanField(required=False, initial=check.active)
            # Not required either: a request without them keeps the stored polarity and severity.
            self.fields[f"check-{check.pk}-problem"] = forms.ChoiceField(
                choices=PROBLEM_CHOICES, required=False, initial=check.problem_word
            )
            self.fields[f"check-{check.pk}-severity"] = forms.ChoiceField(
                choices=SEVERITY_CHOICES, required=False, initial="serious" if check.serious else "mild"
            )

    def settings(self) -> dict:
        """The service's keyword arguments; an empty threshold is left out (the default, or the stored one)."""
        data = {k: self.cleaned_data[k] for k in self.SETTINGS}
        if data["disagreement_threshold"] is None:
            del data["disagreement_threshold"]
        return data

    def queue_settings(self) -> dict:
        """queue_order and queue_source for project_update; empty on the new-project form (oldest first) and
        when the request left the order out (the stored one stays)."""
        if not self.cleaned_data.get("queue_order"):
            return {}
        return {
            "queue_order": self.cleaned_data["queue_order"],
            "queue_source": self.cleaned_data.get("queue_source", ""),
        }

    def check_rows(self) -> list[dict]:
        """Per check, for the checks table: the check and its question, problem, severity and "asked" fields."""
        return [
            {
                "check": c,
                **{part: self[f"check-{c.pk}-{part}"] for part in ("question", "problem", "severity", "active")},
            }
            for c in self.checks
        ]

    def check_edits(self) -> list[CheckEdit]:
        """Every check as submitted; a question, polarity or severity the request left out stays as stored."""
        edits = []
        for check in self.checks:
            name = f"check-{check.pk}-question"
            question = self.cleaned_data[name] if name in self.data else check.question
            problem = self.cleaned_data[f"check-{check.pk}-problem"]
            severity = self.cleaned_data[f"check-{check.pk}-severity"]
            edits.append(
                CheckEdit(
                    check_id=check.pk,
                    question=question,
                    active=self.cleaned_data[f"check-{check.pk}-active"],
                    problem_answer=problem == "yes" if problem else None,
                    serious=severity == "serious" if severity else None,
                )
            )
        return edits

    def new_questions(self) -> list[NewCheck]:
        """The "add a check" rows (the page can add several): a question, which answer is a problem, its severity."""
        if not hasattr(self.data, "getlist"):
            return []
        problems, severities = self.data.getlist("new_problem"), self.data.getlist("new_severity")
        return [
            NewCheck(
                question,
                problem_answer=(problems[i] if i < len(problems) else "yes") != "no",
                serious=(severities[i] if i < len(severities) else "serious") != "mild",
            )
            for i, question in enumerate(self.data.getlist("new_question"))
        ]


class PromptForm(forms.Form):
    """One prompt: plain text, or a chat conversation as the chat editor's JSON."""

    mode = forms.ChoiceField(
        choices=[("plain", "Plain text"), ("chat", "Chat conversation")], initial="plain", required=False
    )
    text = forms.CharField(required=False, strip=False)
    messages = forms.CharField(required=False, strip=False)

    def is_chat(self) -> bool:
        return self.cleaned_data.get("mode") == "chat"


class DemonstrationForm(forms.Form):
    """The ideal answer to a prompt; optionally also one of the completions labelers rank."""

    text = forms.CharField(required=False, strip=False)
    as_completion = forms.BooleanField(required=False)


class TaskFilterForm(forms.Form):
    """The task browser's filters, read from the query string; `filters()` turns a valid form into TaskFilters."""

    status = forms.ChoiceField(required=False)
    labels = forms.IntegerField(required=False, min_value=0, label="Labels (exactly)")
    labels_min = forms.IntegerField(required=False, min_value=0, label="at least")
    labels_max = forms.IntegerField(required=False, min_value=0, label="at most")
    agreement = forms.ChoiceField(required=False)
    source = forms.ChoiceField(required=False, label="Completion source")
    policy = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Policy version")
    model_name = forms.CharField(
        required=False,
        max_length=200,
        label="Model name",
        help_text="Imported completions: the model named in the file, exactly.",
    )
    import_job = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Import")
    date_from = forms.CharField(required=False, label="Created from", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.CharField(required=False, label="to", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, data, *, choices: dict):
        super().__init__(data)
        self.fields["status"].choices = STATUS_CHOICES
        self.fields["agreement"].choices = AGREEMENT_CHOICES
        self.fields["source"].choices = [("", "any"), *Completion.Source.choices]
        self.fields["policy"].choices = [("", "any"), *choices["policies"]]
        self.fields["import_job"].choices = [("", "any"), *choices["imports"]]

    def clean(self):
        data = super().clean()
        low, high = data.get("labels_min"), data.get("labels_max")
        if low is not None and high is not None and low > high:
            self.add_error("labels_max", f"must be at least the minimum ({low}).")
        try:
            data["dates"] = DateRange.parse(data.get("date_from"), data.get("date_to"))
        except ServiceError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        return data

    def filters(self):
        d = self.cleaned_data
        return TaskFilters(
            status=d["status"],
            labels=d["labels"],
            labels_min=d["labels_min"],
            labels_max=d["labels_max"],
            agreement=d["agreement"],
            source=d["source"],
            policy=d["policy"],
            model_name=d["model_name"].strip(),
            import_job=d["import_job"],
            dates=d["dates"],
        )
