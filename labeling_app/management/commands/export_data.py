"""`manage.py export_data --project NAME --format pairwise OUT.jsonl|OUT.parquet`: stream labels or demonstrations.

A JSONL file gets its `datasets.Features` beside it (`OUT.features.json`); a Parquet file holds its schema.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from config.errors import ServiceError
from labeling_app.management.commands.import_data import project_by_name_or_id
from labeling_app.management.progress import progress_bar
from labeling_app.selectors.exports import FILE_TYPES, FORMATS, export_features, export_lines, export_parquet_chunks
from labeling_app.selectors.labels import DEFAULT_MIN_AGREEMENT, DateRange, LabelFilters


class Command(BaseCommand):
    help = (
        "Export pairwise preferences, grouped rankings, SFT demonstrations or KTO-style labels as JSONL (with a "
        ".features.json file for datasets) or Parquet (streamed)."
    )

    def add_arguments(self, parser):
        parser.add_argument("out", nargs="?", default="-", help="Output file (default: standard output).")
        parser.add_argument("--project", action="append", required=True, help="Project name or id; repeat for several.")
        parser.add_argument("--format", choices=FORMATS, default="pairwise")
        parser.add_argument(
            "--file",
            choices=FILE_TYPES,
            default=None,
            help="File type (default: parquet when OUT ends in .parquet, else jsonl).",
        )
        parser.add_argument("--from", dest="date_from", default=None, help="YYYY-MM-DD (inclusive)")
        parser.add_argument("--to", dest="date_to", default=None, help="YYYY-MM-DD (inclusive)")
        parser.add_argument("--labeler", default=None, help='Username, or "import:<source>".')
        parser.add_argument("--full-overlap", action="store_true", help="Only tasks that got all their labels.")
        parser.add_argument(
            "--only-agreeing", action="store_true", help="Only labels agreeing with the task's other labels."
        )
        parser.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT)
        parser.add_argument("--no-imported", action="store_true", help="Leave out imported labels.")
        parser.add_argument(
            "--chat",
            action="store_true",
            help="Write every prompt as chat (a selection with a chat prompt is written as chat anyway).",
        )

    def handle(
        self,
        *args,
        out,
        project,
        format,
        file,
        date_from,
        date_to,
        labeler,
        full_overlap,
        only_agreeing,
        min_agreement,
        no_imported,
        chat,
        **options,
    ):
        if not 0 <= min_agreement <= 1:
            raise CommandError("--min-agreement must be between 0 and 1")
        try:
            DateRange.parse(date_from, date_to)
        except ServiceError as exc:
            raise CommandError(f"--{'from' if exc.field == 'date_from' else 'to'} {exc.message}") from None
        filters = LabelFilters(
            project_ids=[project_by_name_or_id(p).pk for p in project],
            date_from=date_from,
            date_to=date_to,
            labeler=labeler,
            full_overlap=full_overlap,
            only_agreeing=only_agreeing,
            min_agreement=min_agreement,
            include_imported=not no_imported,
            all_chat=chat,
        )
        file = file or ("parquet" if out.endswith(".parquet") else "jsonl")
        if file == "parquet":
            if out == "-":
                raise CommandError("Parquet is a binary file: name an output file, e.g. out.parquet")
            self._write_parquet(out, format, filters)
            return
        n = 0
        to_file = out != "-"
        stream = open(out, "w", encoding="utf-8") if to_file else self.stdout
        # No bar when the records themselves go to the terminal: the two would be drawn over each other.
        bar = progress_bar(self, desc=f"{format} export", unit=" records", enabled=to_file or not self.stdout.isatty())
        try:
            with bar:
                for line in export_lines(format, filters):
                    stream.write(line)  # each line ends with "\n", so self.stdout adds no second one
                    n += 1
                    bar.update()
        finally:
            if to_file:
                stream.close()
        self.stderr.write(f"wrote {n} {format} records" + (f" to {out}" if out != "-" else ""))
        if to_file:
            features = features_path(out)
            features.write_text(json.dumps(export_features(format, filters), indent=1) + "\n", encoding="utf-8")
            self.stderr.write(
                f"wrote the datasets Features to {features} "
                "(load_dataset('json', ..., features=Features.from_dict(json.load(open(...)))))"
            )

    def _write_parquet(self, out: str, fmt: str, filters: LabelFilters) -> None:
        size = 0
        with open(out, "wb") as stream, progress_bar(self, desc=f"{fmt} export", unit="B") as bar:
            for chunk in export_parquet_chunks(fmt, filters):
                stream.write(chunk)
                size += len(chunk)
                bar.update(len(chunk))
        self.stderr.write(f"wrote {fmt} as Parquet ({size} bytes) to {out}")


def features_path(out: str) -> Path:
    """`pairs.jsonl` -> `pairs.features.json` (beside it)."""
    path = Path(out)
    return path.with_name((path.name.removesuffix(".jsonl") or path.name) + ".features.json")
