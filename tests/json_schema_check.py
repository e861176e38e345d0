"""json_schema_check: checks `snaptp <command> --json` output against the README's
"--json fields" table: every field printed is documented for that command with that
type, and every field documented as "always" there is printed.

Usage: python3 tests/json_schema_check.py README.md COMMAND FILE [FILE ...]
(each FILE holds the command's JSON lines). Exit 1 naming each mismatch."""

import json
import re
import sys


def read_table(readme):
    """{(field, command): (type, when)} from the table under '### `--json` fields'."""
    text = open(readme, encoding="utf-8").read()
    start = text.index("### `--json` fields")
    rows = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        fields = re.findall(r"`([^`]+)`", cells[0])
        for field in fields:
            for command in (c.strip() for c in cells[2].split(",")):
                rows[(field, command)] = (cells[1], cells[3])
    if not rows:
        raise SystemExit("FAIL: no rows in the README's --json table")
    return rows


def type_ok(value, typ):
    options = [t.strip() for t in typ.split(" or ")]
    for t in options:
        if t == "null" and value is None:
            return True
        if t == "string" and isinstance(value, str):
            return True
        if t == "boolean" and isinstance(value, bool):
            return True
        if t == "integer" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t == "object" and isinstance(value, dict):
            return True
    return False


def flatten(obj, prefix=""):
    for k, v in obj.items():
        yield prefix + k, v
        if isinstance(v, dict):
            yield from flatten(v, prefix + k + ".")


def main():
    readme, command, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    rows = read_table(readme)
    errors, n_objects = [], 0
    for path in files:
        for line in open(path, encoding="utf-8"):
            if not line.strip():
                continue
            obj = json.loads(line)
            n_objects += 1
            seen = set()
            for field, value in flatten(obj):
                seen.add(field)
                doc = rows.get((field, command))
                if doc is None:
                    errors.append("%s: %s prints '%s', which the README does not document for it"
                                  % (path, command, field))
                elif not type_ok(value, doc[0]):
                    errors.append("%s: %s's '%s' is %r, documented as %s"
                                  % (path, command, field, value, doc[0]))
            for (field, cmd), (_, when) in rows.items():
                if cmd == command and when == "always" and field not in seen:
                    errors.append("%s: %s does not print '%s', documented as always there"
                                  % (path, command, field))
    if n_objects == 0:
        errors.append("no JSON objects in %s" % ", ".join(files))
    for e in errors:
        print("FAIL: " + e)
    if not errors:
        print("ok   %s --json: %d objects match the README's table" % (command, n_objects))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
