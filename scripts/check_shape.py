#!/usr/bin/env python3
"""Checks three rules of docs/ARCHITECTURE.md over src/:

1. no function is longer than 60 lines (signature to closing brace, tests included);
2. no module imports a module that imports it back;
3. the crate's top-level modules (`crate::error`, `crate::session`, ...) depend on each other
   without cycles of any length, test code aside: data flows one way.

A module is a file (`src/a/b.rs` or `src/a/b/mod.rs` is `crate::a::b`). A path `crate::x::y`,
`super::y` or `self::y` in code (comments aside) counts as an import of the longest such path that
is a file. Inside a file's `#[cfg(test)]` part, `super` means the file itself. The check is
textual, so it is conservative for odd formatting; it exits 1 on any finding.

Usage: python3 scripts/check_shape.py [SRC_DIR]
"""

import collections
import os
import re
import sys

MAX_LINES = 60
FN = re.compile(r"^(\s*)(pub(\([a-z ]+\))? )?(const )?(async )?(unsafe )?fn (\w+)")
PATH = re.compile(r"\b(crate|super|self)((?:::\w+)*)(::\{([^}]*)\})?")


def modules(src):
    found = {}
    for directory, _, files in os.walk(src):
        for file in files:
            if not file.endswith(".rs"):
                continue
            path = os.path.join(directory, file)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[0] == "bin":
                continue
            if parts[-1] in ("mod", "lib"):
                parts = parts[:-1]
            found[tuple(parts)] = path
    return found


def long_functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    for start, line in enumerate(lines):
        match = FN.match(line)
        if not match:
            continue
        indent = match.group(1)
        # A declaration without a body (a trait method) ends in `;` before any `{`.
        end = start
        while end < len(lines) and "{" not in lines[end] and not lines[end].rstrip().endswith(";"):
            end += 1
        if end == len(lines) or "{" not in lines[end]:
            continue
        if lines[end].rstrip().endswith("}"):
            continue  # a one-line body
        close = next(
            (i for i in range(end + 1, len(lines)) if lines[i].startswith(indent + "}")),
            None,
        )
        if close is not None and close - start + 1 > MAX_LINES:
            yield start + 1, match.group(7), close - start + 1


def imports(mods, tests=True):
    def resolve(path):
        best = ()
        for i in range(len(path) + 1):
            if tuple(path[:i]) in mods:
                best = tuple(path[:i])
        return best

    edges = collections.defaultdict(set)
    for module, path in mods.items():
        code = "\n".join(
            l for l in open(path, encoding="utf-8").read().split("\n") if not l.strip().startswith("//")
        )
        tests_from = code.find("#[cfg(test)]")
        tests_from = len(code) if tests_from < 0 else tests_from
        if not tests:
            if module[-1:] == ("tests",):
                continue
            code = code[:tests_from]
        for match in PATH.finditer(code):
            base, rest, _, members = match.groups()
            segments = [s for s in rest.split("::") if s]
            if not segments and not members:
                continue  # the word `crate` in `pub(crate)`
            if base == "crate":
                here = []
            elif base == "self" or match.start() > tests_from:
                here = list(module)
            else:
                here = list(module[:-1])
            tails = [segments]
            if members:
                tails = [
                    segments + [m.strip().split("::")[0]]
                    for m in members.split(",")
                    if m.strip() and m.strip() != "self"
                ] or [segments]
            for tail in tails:
                target = resolve(here + tail)
                if target != module:
                    edges[module].add(target)
    return edges


def top_level_cycles(mods):
    """The cycles among top-level modules (the crate root, which re-exports, aside), each as
    the list of its modules, found by a depth-first walk of the dependencies outside tests."""
    deps = collections.defaultdict(set)
    for a, targets in imports(mods, tests=False).items():
        for b in targets:
            if a[:1] and b[:1] and a[:1] != b[:1]:
                deps[a[:1]].add(b[:1])
    cycles, done = [], set()

    def walk(node, path):
        if node in path:
            cycles.append(path[path.index(node):])
            return
        if node in done:
            return
        for next_node in sorted(deps[node]):
            walk(next_node, path + [node])
        done.add(node)

    for node in sorted(deps):
        walk(node, [])
    return cycles


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    mods = modules(src)
    findings = []
    for path in sorted(mods.values()):
        for line, name, length in long_functions(path):
            findings.append(f"{path}:{line}: fn {name} is {length} lines (max {MAX_LINES})")
    edges = imports(mods)
    name = lambda m: "::".join(("crate",) + m)
    for a in sorted(edges):
        for b in sorted(edges[a]):
            if a < b and a in edges.get(b, ()):
                findings.append(f"{name(a)} and {name(b)} import each other")
    for cycle in top_level_cycles(mods):
        findings.append("top-level modules in a cycle: " + " -> ".join(map(name, cycle + cycle[:1])))
    for finding in findings:
        print(finding)
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
