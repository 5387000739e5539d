"""CSV tables: read with the standard library, checked for ragged rows and missing values."""

from __future__ import annotations

import csv
from pathlib import Path

from genlab.data.base import DataReport, TableData
from genlab.errors import DataError

MISSING = {"", "na", "nan", "null", "none", "?"}


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def load_table(path: Path, max_bad_fraction: float = 0.05) -> TableData:
    """A CSV file with a header row. Rows with the wrong number of fields are skipped and reported."""
    path = Path(path).resolve()
    report = DataReport(path.stem, "table", str(path), "path")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            sample = f.read(65536)
            f.seek(0)
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t") if sample else csv.excel
            reader = csv.reader(f, dialect)
            header = next(reader, None)
            rows, total = [], 0
            for line_no, row in enumerate(reader, start=2):
                total += 1
                if len(row) != len(header or []):
                    report.bad_files.append((f"{path.name}:{line_no}", f"{len(row)} fields, header has {len(header)}"))
                else:
                    rows.append(row)
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error.reason})", "save the table as UTF-8 CSV") from None
    except csv.Error as error:
        raise DataError(f"cannot parse {path} as CSV: {error}", "check the delimiter and quoting") from None
    if not header or not rows:
        raise DataError(f"{path} has no header row or no data rows", "write a CSV file with a header line")
    report.check_bad_fraction(total, max_bad_fraction)
    numeric = [all(_is_number(r[i]) for r in rows if r[i].strip().lower() not in MISSING) for i in range(len(header))]
    missing = {h: sum(r[i].strip().lower() in MISSING for r in rows) for i, h in enumerate(header)}
    report.counts = {"rows": len(rows), "columns": len(header)}
    report.notes.append("numeric columns: " + ", ".join(h for h, n in zip(header, numeric) if n))
    report.notes += [f"column {h!r}: {m} missing values" for h, m in missing.items() if m]
    return TableData(path.stem, header, rows, numeric, report)
