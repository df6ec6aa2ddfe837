"""Every error ``code`` bcpay raises or answers is in the catalogue, ``bcpay.errors.CODES``, with its status.

The source is read, not run: every ``code="..."`` given to a call, every ``code = "..."`` of an error class,
every ``{"code": "..."}`` an answer is built from and every ``send_json_error(send, status, "...")``. A code
that is not a literal must be one this file knows where it comes from (``PASS_THROUGH``), so a new kind of
use cannot slip past. The catalogue is what docs/reference/errors.md is generated from.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import bcpay
from bcpay.errors import CODES, BcpayError

ROOT = Path(__file__).resolve().parents[1]
# The fakes answer with BigCommerce's and CeleryPay's own codes, as their contracts spell them.
SKIPPED = ("bcpay/sandbox/", "bcpay/storage/migrations/")

# Codes given as an expression, by file and expression: where they come from.
PASS_THROUGH = {
    ("bcpay/errors.py", "code"): "BcpayError.__init__ keeps the code its caller gave",
    ("bcpay/install.py", "cause.code"): "InstallFailed carries the code of the failed step's error",
    ("bcpay/payflow.py", "refusal.code"): "the codes of rules.Refusal, read where they are written",
    ("bcpay/server/app.py", "exc.code"): "the error handler answers the raised error's code",
    ("bcpay/server/api.py", "exc.code"): "AlreadyPaid's own code",
    ("bcpay/server/middleware.py", "code"): "send_json_error's parameter (its callers are read)",
    ("bcpay/clients/celerypay.py", "code"): "CeleryPay's own code, passed on in UpstreamError.code",
}
# ``code=`` that is no error code at all.
NOT_ERRORS = {
    ("bcpay/install.py", "code"): "the OAuth code of the install callback",
    ("bcpay/server/bcapp.py", "params.get('code', '')"): "the OAuth code of the install callback",
    ("bcpay/clients/bigcommerce_models.py", "_str(o, 'code')"): "a BigCommerce object's own code field",
    ("bcpay/clients/bigcommerce.py", "code"): "the OAuth code, in the token exchange's body",
    ("bcpay/server/openapi.py", "{'type': 'string'}"): "the Error schema's code property",
}
# A face that answers a code with another status than its error class says.
OTHER_STATUS = {
    "csrf_failed": "the settings page answers a failed CSRF check with its own 403 page (bcapp.posted)",
}
# rules.Refusal is raised as payflow.Refused.
RAISED_AS = {"Refusal": "Refused"}


@dataclass(frozen=True)
class Use:
    """One code at one place, with the HTTP status the source gives it (None: the source does not say)."""

    code: str
    where: str
    status: int | None = None


@dataclass
class Scan:
    """What one file holds: codes, and code expressions that are not literals."""

    uses: list[Use] = field(default_factory=list)
    expressions: list[tuple[str, str]] = field(default_factory=list)  # (where, expression)


def error_classes() -> dict[str, type[BcpayError]]:
    """Every BcpayError subclass in bcpay (faces included: they define some), by class name."""
    for module in pkgutil.walk_packages(bcpay.__path__, "bcpay."):
        if not module.name.startswith(("bcpay.sandbox", "bcpay.storage.migrations", "bcpay.__main__")):
            importlib.import_module(module.name)
    found: dict[str, type[BcpayError]] = {}
    todo: list[type[BcpayError]] = [BcpayError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def literals(node: ast.expr) -> list[str] | None:
    """The codes an expression can be, or None when it is not made of literals.

    A string, each branch of a conditional, or a choice from a literal table: ``{404: "a"}.get(s, "b")``.
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = literals(node.body), literals(node.orelse)
        return None if body is None or orelse is None else body + orelse
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and isinstance(node.func.value, ast.Dict) and len(node.args) == 2):
        choices = [literals(v) for v in [*node.func.value.values, node.args[1]]]
        return None if any(c is None for c in choices) else [code for c in choices if c for code in c]
    return None


def assigned_literals(function: ast.AST | None, name: str) -> list[str] | None:
    """The codes of every ``name = ...`` in ``function``; None when it assigns none, or one not of literals."""
    if function is None:
        return None
    values = [literals(node.value) for node in ast.walk(function) if isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)]
    if not values or any(v is None for v in values):
        return None
    return [code for v in values if v for code in v]


def scan(source: str, path: str, classes: dict[str, type[BcpayError]]) -> Scan:
    """Every code in one file's source."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def enclosing(node: ast.AST, kinds: tuple[type[ast.AST], ...]) -> ast.AST | None:
        while node in parents:
            node = parents[node]
            if isinstance(node, kinds):
                return node
        return None

    def status_of(callee: str) -> int | None:
        name = RAISED_AS.get(callee.rsplit(".", 1)[-1], callee.rsplit(".", 1)[-1])
        return classes[name].http_status if name in classes else None

    found = Scan()

    def add(value: ast.expr, node: ast.AST, status: int | None) -> None:
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        codes = literals(value)
        if codes is None and isinstance(value, ast.Name):
            codes = assigned_literals(enclosing(node, (ast.FunctionDef, ast.AsyncFunctionDef)), value.id)
        if codes is None:
            found.expressions.append((where, ast.unparse(value)))
        else:
            found.uses.extend(Use(code, where, status) for code in codes)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = ast.unparse(node.func)
            for keyword in node.keywords:
                if keyword.arg == "code":
                    add(keyword.value, node, status_of(callee))
            if callee == "send_json_error" and len(node.args) >= 3:
                status = node.args[1].value if isinstance(node.args[1], ast.Constant) else None
                add(node.args[2], node, status)
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                        and isinstance(statement.targets[0], ast.Name) and statement.targets[0].id == "code"):
                    known = [n for n in [node.name, *map(ast.unparse, node.bases)] if status_of(n) is not None]
                    add(statement.value, statement, status_of(known[0]) if known else None)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "code":
                    response = enclosing(node, (ast.Call,))
                    status = None
                    if isinstance(response, ast.Call):
                        given = {k.arg: k.value for k in response.keywords}.get("status_code")
                        status = given.value if isinstance(given, ast.Constant) else None
                    add(value, node, status)
    return found


def scan_bcpay() -> Scan:
    """Every code in bcpay's source, but the fakes'."""
    classes = error_classes()
    total = Scan()
    for path in sorted((ROOT / "bcpay").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(SKIPPED):
            continue
        part = scan(path.read_text(encoding="utf-8"), relative, classes)
        total.uses.extend(part.uses)
        total.expressions.extend(part.expressions)
    return total


def missing_from_catalogue(uses: list[Use]) -> list[str]:
    """The uses of codes the catalogue lacks, one line each."""
    return sorted(f"{u.where}: {u.code}" for u in uses if u.code not in CODES)


@pytest.fixture(scope="module")
def found() -> Scan:
    return scan_bcpay()


def test_every_code_used_in_bcpay_is_in_the_catalogue(found: Scan) -> None:
    """A new code needs a line in bcpay.errors.CODES (then regenerate docs/reference/errors.md)."""
    assert len({u.code for u in found.uses}) > 50  # the scan reads what it should
    assert missing_from_catalogue(found.uses) == []


def test_the_catalogue_has_no_code_that_nothing_uses(found: Scan) -> None:
    assert sorted(set(CODES) - {u.code for u in found.uses}) == []


def test_every_code_comes_with_a_status_the_catalogue_gives_it(found: Scan) -> None:
    wrong = sorted(f"{u.where}: {u.code} comes with {u.status}, the catalogue says {CODES[u.code].statuses}"
                   for u in found.uses if u.status is not None and u.code in CODES and u.code not in OTHER_STATUS
                   and u.status not in CODES[u.code].statuses)
    assert wrong == []


def test_codes_that_are_not_literals_are_known_pass_throughs(found: Scan) -> None:
    """A code built some other way must be written out, or join PASS_THROUGH saying where it comes from."""
    known = {*PASS_THROUGH, *NOT_ERRORS}
    unknown = sorted(f"{where}: code={expression}" for where, expression in found.expressions
                     if (where.rsplit(":", 1)[0], expression) not in known)
    assert unknown == []
    seen = {(where.rsplit(":", 1)[0], expression) for where, expression in found.expressions}
    assert sorted(known - seen) == []  # no stale entry


def test_every_code_has_a_meaning_and_a_status() -> None:
    for code, entry in CODES.items():
        assert entry.meaning.strip() and entry.meaning.endswith("."), code
        assert entry.statuses and all(100 <= s <= 599 for s in entry.statuses), code


def test_the_scan_finds_a_new_code_raised_answered_or_chosen() -> None:
    """Control: a code the catalogue lacks is named, whichever way the source gives it."""
    source = '''
class Gone(NotFoundError):
    code = "gone_for_good"

def f(exc):
    raise ConflictError("x", code="brand_new_code")

def g(request):
    return JSONResponse({"error": {"code": "made_up", "message": "m"}}, status_code=418)

async def h(send):
    await send_json_error(send, 451, "not_here", "m")

def k(flag):
    raise InvalidInputError("x", code="one_way" if flag else "other_way")

def m(exc):
    code = {400: "first_choice"}.get(exc.status, "fallback")
    return JSONResponse({"error": {"code": code}})

def n(exc):
    raise ConflictError("x", code=exc.whatever)
'''
    result = scan(source, "probe.py", error_classes())
    assert missing_from_catalogue(result.uses) == [
        "probe.py:12: not_here", "probe.py:15: one_way", "probe.py:15: other_way", "probe.py:19: fallback",
        "probe.py:19: first_choice", "probe.py:3: gone_for_good", "probe.py:6: brand_new_code",
        "probe.py:9: made_up",
    ]
    statuses = {u.code: u.status for u in result.uses}
    assert statuses["brand_new_code"] == 409 and statuses["made_up"] == 418 and statuses["not_here"] == 451
    assert statuses["gone_for_good"] == 404 and statuses["one_way"] == 400
    assert result.expressions == [("probe.py:22", "exc.whatever")]
