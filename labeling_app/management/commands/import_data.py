"""`manage.py import_data --project NAME --kind prompts FILE [--skip-invalid]`: validate a whole file, then import it (streamed)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from config.errors import ServiceError
from labeling_app.management.progress import progress_bar
from labeling_app.models import ImportJob, Project
from labeling_app.selectors.imports import import_result_lines
from labeling_app.services.imports import import_file


def project_by_name_or_id(value: str) -> Project:
    project = Project.objects.filter(name=value).first()
    if project is None and value.isdigit():
        project = Project.objects.filter(pk=int(value)).first()
    if project is None:
        names = ", ".join(Project.objects.values_list("name", flat=True)[:20]) or "none yet"
        raise CommandError(f"no project {value!r}; known projects: {names}")
    return project


class Command(BaseCommand):
    help = (
        "Import prompts (JSONL/CSV), prompts with completions, demonstrations or preference labels (JSONL) into a "
        "project. The whole file is validated first; any bad line aborts the import and is reported with its line and "
        "field, unless --skip-invalid. Importing the same file again reuses or skips what is already there."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--project", required=True, help="Project name (or id).")
        parser.add_argument("--kind", required=True, choices=ImportJob.Kind.values)
        parser.add_argument(
            "--source", default="", help="Import source name; required for --kind preferences (e.g. hh-rlhf)."
        )
        parser.add_argument(
            "--format", choices=["jsonl", "csv"], default=None, help="Default: from the file extension."
        )
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument(
            "--skip-invalid",
            action="store_true",
            help="Import the valid lines and skip the bad ones, listing each with its reason "
            "(default: any bad line refuses the whole file).",
        )

    def handle(self, *args, file, project, kind, source, format, batch_size, skip_invalid=False, **options):
        target = project_by_name_or_id(project)
        verbosity = options.get("verbosity", 1)
        bars = {}  # phase -> its progress bar, drawn when stderr is a terminal

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in bars:
                bars[phase] = progress_bar(self, desc=phase, unit=" lines", total=total or None)
            bar = bars[phase]
            if not bar.disable:
                bar.update(done - bar.n)
            elif verbosity >= 2 or (done and done % 20000 == 0):
                self.stderr.write(f"{phase}: {done}" + (f"/{total}" if total else "") + " lines")

        try:
            result = import_file(
                project=target,
                kind=kind,
                path=file,
                source_name=source,
                fmt=format,
                batch_size=batch_size,
                skip_invalid=skip_invalid,
                on_progress=progress,
            )
        except (ServiceError, ValueError, OSError) as exc:  # ImportRejected lists the bad lines in its message
            raise CommandError(str(exc)) from None
        finally:
            for bar in bars.values():
                bar.close()
        self.stdout.write(
            self.style.SUCCESS(
                f"imported into {target.name!r}: "
                + "; ".join(import_result_lines(result.as_dict(), kind=kind, source_name=source))
            )
        )
        for error in result.invalid_lines:
            self.stdout.write(f"  skipped {error}")
        if result.invalid_skipped > len(result.invalid_lines):
            self.stdout.write(f"  ... {result.invalid_skipped - len(result.invalid_lines)} more skipped lines")
        for line, preview in result.duplicate_lines[:20]:
            self.stdout.write(f"  duplicate prompt on line {line}: {preview}")
        if result.prompts_existing > 20:
            self.stdout.write(f"  ... {result.prompts_existing - 20} more duplicates")
