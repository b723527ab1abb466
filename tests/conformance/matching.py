"""Matching a driver's reply against a scenario's `expect`, and the `${name}` substitution
(tests/conformance/README.md, "A scenario")."""

from __future__ import annotations

import json
import re
from typing import Any

VAR = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")


class StepFailed(Exception):
    """A step whose reply did not match, or that could not be carried out."""


def substitute(value: Any, names: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = VAR.fullmatch(value)
        if whole:
            return lookup(names, whole.group(1))
        return VAR.sub(lambda m: str(lookup(names, m.group(1))), value)
    if isinstance(value, list):
        return [substitute(v, names) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, names) for k, v in value.items()}
    return value


def lookup(names: dict[str, Any], name: str) -> Any:
    if name not in names:
        raise StepFailed(f"${{{name}}} is not defined (saved names: {', '.join(sorted(names))})")
    return names[name]


def dig(reply: Any, path: str) -> Any:
    here = reply
    for part in path.split("."):
        if isinstance(here, list) and part.lstrip("-").isdigit():
            here = here[int(part)]
        elif isinstance(here, dict) and part in here:
            here = here[part]
        else:
            raise StepFailed(f"save: the reply has no {path!r}")
    return here


def mismatch(want: Any, got: Any, where: str = "") -> str | None:
    """Why `got` does not match `want` (README: "expect"), or None when it does."""
    at = where or "reply"
    if isinstance(want, dict) and set(want) == {"$contains"}:
        if isinstance(got, str) and want["$contains"] in got:
            return None
        return f"{at}: {json.dumps(got, ensure_ascii=False)} does not contain {want['$contains']!r}"
    if isinstance(want, (dict, list)) and isinstance(got, str):
        try:
            got = json.loads(got)
        except json.JSONDecodeError:
            return f"{at}: {got!r} is not JSON, expected {json.dumps(want, ensure_ascii=False)}"
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{at}: {json.dumps(got, ensure_ascii=False)} is not an object"
        for key, sub in want.items():
            if key not in got:
                return f"{at}: no {key!r} in {json.dumps(got, ensure_ascii=False)}"
            problem = mismatch(sub, got[key], f"{where}.{key}" if where else key)
            if problem:
                return problem
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{at}: {json.dumps(got, ensure_ascii=False)} is not {json.dumps(want, ensure_ascii=False)}"
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            problem = mismatch(w, g, f"{where}.{i}" if where else str(i))
            if problem:
                return problem
        return None
    # Scalars: bool is not an int here, and 3 == 3.0.
    if type(want) is bool or type(got) is bool:
        same = want is got
    elif isinstance(want, (int, float)) and isinstance(got, (int, float)):
        same = want == got
    else:
        same = want == got
    return (
        None
        if same
        else f"{at}: got {json.dumps(got, ensure_ascii=False)}, expected {json.dumps(want, ensure_ascii=False)}"
    )
