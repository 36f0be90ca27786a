"""Validates YAML files against a JSON Schema: `schema_check.py SCHEMA FILE...`.

Prints one line per file, `ok FILE` or `invalid FILE: path: message`;
exits 1 when any file is invalid. The check `claimgate schema` is for:
what an editor's YAML language server would say.
"""
import json
import sys

import jsonschema
import yaml


def main() -> int:
    schema = json.load(open(sys.argv[1]))
    validator = jsonschema.Draft202012Validator(schema)
    bad = 0
    for path in sys.argv[2:]:
        doc = yaml.safe_load(open(path)) or {}
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            bad += 1
            e = errors[0]
            where = "/".join(str(p) for p in e.path)
            print(f"invalid {path}: {where}: {e.message}")
        else:
            print(f"ok {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
