"""`import dipflow` stays light: the dataframe, plotting and cluster libraries
load only when a function that needs them runs."""

import pathlib
import subprocess
import sys

HEAVY = ("pandas", "matplotlib", "dask")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}; import sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_import_dipflow_imports_no_heavy_library():
    loaded = _modules_after("import dipflow")
    assert "dipflow" in loaded
    assert not [m for m in HEAVY if m in loaded]


def test_verify_loads_on_first_use():
    loaded = _modules_after("import dipflow; dipflow.verify.lemma2")
    assert "dipflow.verify" in loaded and "pandas" in loaded


def test_the_package_has_no_import_cycle():
    # Every import counts, function-level ones included: a cycle hidden inside a
    # function is still a lower layer that reaches upwards.
    import grimp

    graph = grimp.build_graph("dipflow")
    modules = set(graph.modules)
    edges = {
        m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules
    }
    done: set[str] = set()

    def cycle_from(start):
        # Iterative DFS: returns a cycle as a list of modules, or None.
        path, on_path, stack = [], set(), [(start, iter(sorted(edges[start])))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, children = stack[-1]
            for child in children:
                if child in on_path:
                    return path[path.index(child) :] + [child]
                if child not in done:
                    path.append(child)
                    on_path.add(child)
                    stack.append((child, iter(sorted(edges[child]))))
                    break
            else:
                stack.pop()
                on_path.discard(path.pop())
                done.add(node)
        return None

    for module in sorted(modules):
        if module not in done:
            cycle = cycle_from(module)
            assert cycle is None, " -> ".join(cycle)


def test_the_layers_contract_holds():
    # The contract lives in pyproject.toml; `lint-imports` sits beside this Python.
    lint = pathlib.Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def _string_comparisons(tree) -> list[int]:
    """Lines where a value is compared with string literals (`x == "a"`,
    `x in ("a", "b")`); a literal key looked up in a container (`"a" in d`) is
    not a comparison of a value."""
    import ast

    def literal(node):
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return bool(node.elts) and all(literal(e) for e in node.elts)
        return False

    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        if isinstance(node.ops[0], (ast.In, ast.NotIn)) and literal(node.left):
            continue
        equality = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
        if any(isinstance(op, equality) for op in node.ops) and (
            literal(node.left) or any(literal(c) for c in node.comparators)
        ):
            lines.append(node.lineno)
    return lines


def test_strings_are_parsed_into_types_at_the_boundary():
    # Names people type (CLI, TOML) are parsed into types once; the code below
    # dispatches on the types. The CLI and the TOML reader are the boundary.
    import ast

    root = pathlib.Path(__file__).parents[1] / "dipflow"
    found = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("cli/") or rel == "studies/_sweep_config.py":
            continue
        lines = _string_comparisons(ast.parse(path.read_text()))
        if lines:
            found[rel] = lines
    assert sum(map(len, found.values())) <= 10, found
