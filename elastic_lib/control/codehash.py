"""Hashes of code by what it does, not by how its file reads: the library part of a run's fingerprint.

A module is cut into *units*: each top-level function, class and assignment, each method, and the
module's other top-level statements together (``<module>``). A unit's hash is taken over its syntax
tree, so that

- comments, docstrings (and other bare string statements), blank lines, line breaks and quoting
  do not count; nor do arguments given to a parameter named ``doc`` of a library function (the doc
  lines of ``RunConfig``'s fields), nor ``__all__``, nor an ``if __name__ == "__main__":`` block
  (an import never runs it);
- a unit's own name and module do not count, and every name it uses that the library defines is
  replaced by the hash of what it names (followed through imports and re-exports), so moving or
  renaming a function, class or module leaves every hash as it was;
- everything else counts: a statement, an argument default, a constant a function reads (through
  its hash), a decorator, a base class, a method's name (Python looks methods up by name).

Hashes are Merkle hashes: a unit's hash covers the hashes of the library units it uses, so a change
anywhere reaches every unit that depends on it; mutually recursive units share one hash of their
group. Each unit also has a *shallow* hash, of its own code with library names replaced by a
placeholder, which tells which units changed in their own code (``changed``).

Light: the standard library only (``ast``, ``hashlib``); no import of the code it hashes.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from dataclasses import dataclass, field

MODULE = "<module>"
NOTEBOOK_MODULE = "__notebook__"  # the notebook's code cells, hashed as a module of the package
_MOD = re.compile(r"mod\(([^()]*)\)")
_REF = re.compile("\x00([^\x00]*)\x00")
HASH_CHARS = 16  # 64 bits per unit: no collision to fear among a few thousand units


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def module_name(rel_path: str) -> str:
    """``elastic_lib``-relative dotted name of a source file: ``a/b.py`` -> ``a.b``, ``a/__init__.py``
    -> ``a``, ``__init__.py`` -> ``__init__`` (the package itself)."""
    parts = rel_path[:-3].replace(os.sep, "/").split("/")
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def read_package(lib_dir: str) -> dict[str, str]:
    """``{module name: source}`` of every ``.py`` file under ``lib_dir``."""
    out = {}
    for folder, dirs, files in os.walk(lib_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                with open(path, encoding="utf-8") as fh:
                    out[module_name(os.path.relpath(path, lib_dir))] = fh.read()
    return out


# ---------------------------------------------------------------- bindings and units
@dataclass
class Unit:
    key: str  # "module:qualname"
    module: str
    nodes: list  # the statements it is made of
    kind: str  # function | class | assign | module | method
    methods: list = field(default_factory=list)  # class: [(name, unit key)]
    opaque: bool = False  # named, not hashed, where it is used
    elided: object = None  # a table: the literal whose entries are units of their own
    position: str = ""  # an entry of a list or tuple: its place


def _is_doc(stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _table_literal(value):
    """The literal of a table assignment: a list, tuple, set or dict display, or the list or tuple a
    one-generator comprehension runs over (``{b.name: b for b in [...]}``); None otherwise."""
    if isinstance(value, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
        return value
    if isinstance(value, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)) and len(value.generators) == 1:
        it = value.generators[0].iter
        return it if isinstance(it, (ast.List, ast.Tuple)) else None
    return None


def _entry_name(node, i: int) -> str:
    """An entry's name in messages: the first string of a call (``Backbone("vgg16", ...)``), else its place."""
    if (
        isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return repr(node.args[0].value)
    return str(i)


def _is_main_block(stmt) -> bool:
    t = stmt.test if isinstance(stmt, ast.If) else None
    return (
        isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and len(t.comparators) == 1
        and isinstance(t.comparators[0], ast.Constant)
        and t.comparators[0].value == "__main__"
    )


def _targets(stmt) -> list[str]:
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        targets = [stmt.target]
    else:
        return []
    names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return names if all(isinstance(t, (ast.Name, ast.Tuple, ast.List)) for t in targets) else []


def _package_of(module: str, is_pkg: bool) -> str:
    """The package a module's relative imports start from ('' is the top package)."""
    if module == "__init__":
        return ""
    return module if is_pkg else module.rpartition(".")[0]


def _import_targets(stmt, module: str, is_pkg: bool) -> dict[str, tuple]:
    """Names an import statement binds -> ("mod", library module) | ("sym", module, name) | ("ext", dotted)."""
    out = {}
    if isinstance(stmt, ast.Import):
        for a in stmt.names:
            if a.name == "elastic_lib" or a.name.startswith("elastic_lib."):
                target = a.name[len("elastic_lib.") :] if a.name != "elastic_lib" else "__init__"
                out[a.asname or a.name.split(".")[0]] = ("mod", target if a.asname else "__init__")
            else:
                out[a.asname or a.name.split(".")[0]] = ("ext", a.name if a.asname else a.name.split(".")[0])
        return out
    if stmt.level == 0 and not (stmt.module or "").startswith("elastic_lib"):
        for a in stmt.names:
            out[a.asname or a.name] = ("ext", f"{stmt.module}.{a.name}")
        return out
    if stmt.level == 0:
        base = stmt.module[len("elastic_lib.") :] if stmt.module != "elastic_lib" else ""
    else:
        base = _package_of(module, is_pkg)
        for _ in range(stmt.level - 1):
            base = base.rpartition(".")[0]
        if stmt.module:
            base = f"{base}.{stmt.module}" if base else stmt.module
    for a in stmt.names:
        sub = f"{base}.{a.name}" if base else a.name
        out[a.asname or a.name] = ("sub", base or "__init__", a.name, sub)
    return out


class Package:
    """The units of a package's sources and the names each module binds."""

    def __init__(self, sources: dict[str, str]):
        self.modules = set(sources)
        self.units: dict[str, Unit] = {}
        self.bindings: dict[str, dict[str, tuple]] = {}
        for module in sorted(sources):
            self._cut(module, ast.parse(sources[module]))

    def _is_pkg(self, module: str) -> bool:
        return module == "__init__" or any(m.startswith(module + ".") for m in self.modules)

    def _add(self, unit: Unit) -> str:
        key, n = unit.key, 2
        while key in self.units:
            key, n = f"{unit.key}#{n}", n + 1
        unit.key = key
        self.units[key] = unit
        return key

    def _cut(self, module: str, tree: ast.Module) -> None:
        binds: dict[str, tuple] = {}
        rest = []
        is_pkg = self._is_pkg(module)
        for stmt in tree.body:
            if _is_doc(stmt) or _is_main_block(stmt):
                continue
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                if not (isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"):
                    binds.update(_import_targets(stmt, module, is_pkg))
                continue
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                binds[stmt.name] = ("unit", self._add(Unit(f"{module}:{stmt.name}", module, [stmt], "function")))
            elif isinstance(stmt, ast.ClassDef):
                binds[stmt.name] = ("unit", self._cut_class(module, stmt))
            elif _targets(stmt):
                names = _targets(stmt)
                if names == ["__all__"]:
                    continue
                key = self._add(Unit(f"{module}:{','.join(names)}", module, [stmt], "assign"))
                binds.update({n: ("unit", key) for n in names})
                self._cut_table(module, key, stmt.value)
            else:
                rest.append(stmt)
        if rest:
            key = self._add(Unit(f"{module}:{MODULE}", module, rest, "module"))
            for stmt in rest:  # names bound inside top-level if/try/for/with blocks: the module's own code
                for n in ast.walk(stmt):
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                        binds.setdefault(n.id, ("unit", key))
                    elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        binds.setdefault(n.name, ("unit", key))
                    elif isinstance(n, ast.alias):
                        binds.setdefault(n.asname or n.name.split(".")[0], ("unit", key))
        self.bindings[module] = binds

    def _cut_table(self, module: str, key: str, value) -> None:
        """A table written as a literal (a registry, the choices of a parameter): each entry is a unit
        of its own and the table's unit leaves them out, so an added entry changes no recorded unit,
        while an entry that changes or goes away is found (every unit of an imported module is
        recorded). A list or tuple entry is hashed with its position; a dict entry with its key."""
        literal = _table_literal(value)
        if literal is None:
            return
        self.units[key].elided = literal
        if isinstance(literal, ast.Dict):
            entries = [
                (ast.unparse(k)[:60] if k is not None else f"**{i}", [k, v], "")
                for i, (k, v) in enumerate(zip(literal.keys, literal.values))
            ]
        else:
            entries = [
                (_entry_name(e, i), [e], f"position {i}" if not isinstance(literal, ast.Set) else "")
                for i, e in enumerate(literal.elts)
            ]
        for name, nodes, where in entries:
            self._add(Unit(f"{key}[{name}]", module, [n for n in nodes if n is not None], "entry", position=where))

    def _cut_class(self, module: str, cls: ast.ClassDef) -> str:
        unit = Unit(f"{module}:{cls.name}", module, [cls], "class")
        key = self._add(unit)
        for stmt in cls.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                mkey = self._add(Unit(f"{key}.{stmt.name}", module, [stmt], "method"))
                unit.methods.append((stmt.name, mkey))
        return key

    # ------------------------------------------------------------ name resolution
    def resolve(self, module: str, name: str, depth: int = 0) -> tuple | None:
        """What ``name`` means at the top level of ``module``: ("unit", key) | ("mod", module) |
        ("ext", dotted) | None (a builtin or unknown)."""
        b = self.bindings.get(module, {}).get(name)
        if b is None or depth > 20:
            return None
        return self._follow(b, depth)

    def _follow(self, b: tuple, depth: int = 0) -> tuple | None:
        if b[0] == "sub":  # from <base> import <name>: a submodule, or a name bound in <base>
            _, base, name, sub = b
            if sub in self.modules:
                return ("mod", sub)
            return self.resolve(base, name, depth + 1) if base in self.modules else None
        if b[0] == "mod" and b[1] not in self.modules:
            return None
        return b

    def resolve_attr(self, target: tuple, attr: str) -> tuple | None:
        if target[0] == "mod":
            sub = f"{target[1]}.{attr}" if target[1] != "__init__" else attr
            return ("mod", sub) if sub in self.modules else self.resolve(target[1], attr)
        if target[0] == "ext":
            return ("ext", f"{target[1]}.{attr}")
        return None


# ---------------------------------------------------------------- canonical form
_SKIP = {"ctx", "type_comment", "kind", "type_ignores"}


class _Serializer:
    """A unit's syntax tree as text, library names replaced by ``ref(target)``."""

    def __init__(self, pkg: Package, unit: Unit, ref):
        self.pkg, self.unit, self.ref = pkg, unit, ref
        self.local: set[str] = set()
        self.imports: dict[str, tuple] = {}

    # scope: names bound inside the unit are its own; imports inside it resolve like top-level ones
    def _scope(self, nodes) -> None:
        declared_global = set()
        for stmt in nodes:
            for n in ast.walk(stmt):
                if isinstance(n, ast.Global):
                    declared_global.update(n.names)
        for stmt in nodes:
            if isinstance(stmt, ast.ClassDef):  # a class: its own statements (methods are units)
                roots = [s for s in stmt.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
                roots += stmt.bases + [k.value for k in stmt.keywords] + stmt.decorator_list
            else:
                roots = [stmt]
            for root in roots:
                for n in ast.walk(root):
                    if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                        self.local.add(n.id)
                    elif isinstance(n, ast.arg):
                        self.local.add(n.arg)
                    elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n is not stmt:
                        self.local.add(n.name)
                    elif isinstance(n, (ast.Import, ast.ImportFrom)):
                        is_pkg = self.pkg._is_pkg(self.unit.module)
                        self.imports.update(_import_targets(n, self.unit.module, is_pkg))
                    elif isinstance(n, ast.ExceptHandler) and n.name:
                        self.local.add(n.name)
                    elif isinstance(n, ast.MatchAs) and n.name:
                        self.local.add(n.name)
        if self.unit.kind in ("module", "assign", "entry"):
            self.local = set()  # top-level names resolve to their units
        self.local -= declared_global

    def target(self, node) -> tuple | None:
        """The library or external thing a Name / Attribute chain names, or None."""
        if isinstance(node, ast.Name):
            if node.id in self.local:
                return None
            if node.id in self.imports:
                return self.pkg._follow(self.imports[node.id])
            return self.pkg.resolve(self.unit.module, node.id)
        if isinstance(node, ast.Attribute):
            base = self.target(node.value)
            return None if base is None else self.pkg.resolve_attr(base, node.attr)
        return None

    def text(self) -> str:
        self._scope(self.unit.nodes)
        body = "\n".join(self.ser(n, top=True) for n in self.unit.nodes)
        return f"entry at {self.unit.position}: {body}" if self.unit.position else body

    def ser(self, node, top: bool = False) -> str:
        if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(getattr(node, "ctx", None), ast.Load):
            t = self.target(node)
            if t is not None:
                if t[0] == "unit":
                    return f"lib({t[1]})" if self.pkg.units[t[1]].opaque else self.ref(t[1])
                if t[0] == "ext":
                    return f"ext({t[1]})"
                return f"mod({t[1]})"
        if isinstance(node, list):
            return "[" + ",".join(self.ser(x) for x in node) + "]"
        if node is self.unit.elided and node is not None:
            return f"{type(node).__name__}(entries)"  # the table's entries are units of their own
        if not isinstance(node, ast.AST):
            return repr(node)
        if isinstance(node, ast.Constant):
            return f"Constant({type(node.value).__name__}:{node.value!r})"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return "Import()"  # a binding only: what it binds is resolved where it is used
        if isinstance(node, ast.Call):
            return self._call(node)
        parts = []
        for name in node._fields:
            if name in _SKIP or (top and name == "name" and self.unit.kind != "module"):
                continue
            value = getattr(node, name, None)
            if name == "body" and isinstance(value, list):
                value = [
                    s
                    for s in value
                    if not _is_doc(s)
                    and not (
                        top
                        and isinstance(node, ast.ClassDef)
                        and isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
                    )
                ]
            if value is None or value == []:
                continue
            parts.append(f"{name}={self.ser(value)}")
        return f"{type(node).__name__}({','.join(parts)})"

    def _call(self, node: ast.Call) -> str:
        """A call; arguments given to a parameter named ``doc`` of a library function are documentation."""
        args, keywords = list(node.args), list(node.keywords)
        t = self.target(node.func)
        if t is not None and t[0] == "unit":
            fn = self.pkg.units[t[1]].nodes[0]
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
                if "doc" in params and not any(isinstance(a, ast.Starred) for a in args):
                    i = params.index("doc")
                    args = [a for j, a in enumerate(args) if j != i]
                keywords = [k for k in keywords if k.arg != "doc"]
        return f"Call(func={self.ser(node.func)},args={self.ser(args)},keywords={self.ser(keywords)})"


# ---------------------------------------------------------------- Merkle hashes
def _sccs(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components, callees before callers (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def _unit_text(pkg: Package, unit: Unit, ref) -> str:
    text = _Serializer(pkg, unit, ref).text()
    if unit.methods:  # a class: its methods by name (Python finds them by name) and hash
        text += "\nmethods=" + ",".join(f"{name}:{ref(key)}" for name, key in sorted(unit.methods))
    return text


def package_hashes(sources: dict[str, str], opaque=()) -> dict[str, tuple[str, str, tuple, tuple]]:
    """``{unit key: (hash, shallow hash, keys of the units it uses, keys of the units it can reach in
    one step)}`` for every unit of the package's sources. ``opaque``: module names and unit keys
    whose units are named, not hashed, where another unit uses them (their code does not count,
    and reaching stops there). One step reaches what a unit uses, a table's entries, and every unit
    of a library module it holds as an object."""
    pkg = Package(sources)
    for k, u in pkg.units.items():
        u.opaque = u.module in opaque or k in opaque or k.partition("[")[0] in opaque
    # each unit written once, library references left as markers to fill in per hash
    template = {k: _unit_text(pkg, u, lambda key: f"\x00{key}\x00") for k, u in pkg.units.items()}
    graph = {k: sorted(set(_REF.findall(t))) for k, t in template.items()}
    by_module: dict[str, list[str]] = {}
    for k, u in pkg.units.items():
        by_module.setdefault(u.module, []).append(k)
    reach = {
        k: sorted(
            {
                *graph[k],
                *(e for e in pkg.units if e.startswith(k + "[")),
                *(e for m in _MOD.findall(template[k]) for e in by_module.get(m, ())),
            }
        )
        for k in pkg.units
    }

    def fill(key, ref):
        return _REF.sub(lambda m: ref(m.group(1)), template[key])

    deep: dict[str, str] = {}
    shallow = {k: _h(fill(k, lambda key: "ref")) for k in pkg.units}
    for comp in _sccs(graph):
        members = set(comp)
        if len(comp) == 1 and comp[0] not in graph[comp[0]]:
            deep[comp[0]] = _h(fill(comp[0], deep.__getitem__))
            continue
        # inside a group of mutually dependent units a reference is to the target's shape
        shape = {k: _h(fill(k, lambda key: "scc" if key in members else deep[key])) for k in comp}  # noqa: B023
        group = ",".join(sorted(shape.values()))
        for k in comp:
            deep[k] = _h(fill(k, lambda key: f"scc:{shape[key]}" if key in members else deep[key]) + "\ngroup=" + group)  # noqa: B023
    return {
        k: (deep[k], shallow[k], tuple(graph[k]), tuple(reach[k]), pkg.units[k].opaque, _is_root(pkg.units[k]))
        for k in pkg.units
    }


def _is_root(unit: Unit) -> bool:
    """Code an import runs by itself: a module's own statements, an assignment that calls something,
    and decorated definitions (a decorator may register them, to be found by name)."""
    node = unit.nodes[0]
    if unit.kind == "assign":
        return any(isinstance(n, ast.Call) for n in ast.walk(node))
    return unit.kind == "module" or bool(getattr(node, "decorator_list", None)) and unit.kind != "method"


def reachable(hashes: dict[str, tuple], roots, modules=None) -> set[str]:
    """The units ``roots`` can reach (opaque units are not entered), within ``modules`` if given:
    what a run can execute."""
    seen, todo = set(), [r for r in roots if r in hashes]
    while todo:
        k = todo.pop()
        if k in seen or hashes[k][4]:
            continue
        seen.add(k)
        todo.extend(t for t in hashes[k][3] if t not in seen)
    return {k for k in seen if modules is None or k.partition(":")[0] in modules}


def run_units(hashes: dict[str, tuple], modules, entry: str = NOTEBOOK_MODULE) -> dict[str, str]:
    """The recorded form of what a run can execute: every unit reachable from the ``entry``
    pseudo-module's units (the notebook's code) and from the code the import of ``modules`` runs
    (their own statements, decorated definitions), within ``modules``: ``{unit key: "hash shallow"}``."""
    modules = set(modules)
    roots = [k for k, v in hashes.items() if k.partition(":")[0] == entry or (k.partition(":")[0] in modules and v[5])]
    keep = reachable(hashes, roots, modules)
    return {k: f"{v[0]} {v[1]}" for k, v in sorted(hashes.items()) if k in keep}


def module_units(hashes: dict[str, tuple], modules) -> dict[str, str]:
    """The recorded form for the units of ``modules``: ``{unit key: "hash shallow"}``."""
    modules = set(modules)
    return {k: f"{v[0]} {v[1]}" for k, v in sorted(hashes.items()) if k.partition(":")[0] in modules}


def changed(recorded: dict[str, str], now: dict[str, tuple]) -> list[str]:
    """The recorded units whose code is not in the package any more (empty: everything recorded is
    still there, wherever it lives now), as ``module:qualname``, narrowed to where the change is:
    the units whose own code changed, and those that use no other changed unit (a call retargeted
    to another existing function); every unit whose hash is gone if that leaves none."""
    deep_now = {v[0] for v in now.values()}
    shallow_now = {v[1] for v in now.values()}
    gone = {k: v.split() for k, v in recorded.items() if v.split()[0] not in deep_now}
    own = {k for k, (_, s) in gone.items() if s not in shallow_now}
    memo: dict[str, bool] = {}

    def reaches_gone(key: str) -> bool:  # through units not recorded (modules the run did not import) too
        if key not in memo:
            memo[key] = False  # a cycle reaches nothing new
            memo[key] = key in gone or any(reaches_gone(t) for t in now.get(key, ((), (), ()))[2])
        return memo[key]

    leaves = {k for k in gone if k in now and not any(reaches_gone(t) for t in now[k][2])}
    return sorted(own | leaves) or sorted(gone)


def notebook_text(sources: list[str]) -> str:
    """A notebook's code cells in canonical form: comments and formatting do not count; a cell that
    is not plain Python (a magic) counts as written."""
    out = []
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            out.append("raw:" + src)
            continue
        unit = Unit("notebook:cell", "__notebook__", tree.body, "module")
        out.append(_Serializer(Package({}), unit, lambda key: key).text())  # no library names resolved
    return "\n# ----- cell\n".join(out)
