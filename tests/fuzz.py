"""Hostile-file fuzzing: mutated files of every family, each case run in a worker subprocess under a
timeout, outcomes counted.

Attacks: bit flips and zeroed ranges of the bytes; HDF5 external raw storage, virtual datasets,
external and soft links pointing at a file with a secret; filters outside the allow-list; hostile
node names; huge or negative shapes, paddings, strides; unwritten huge fixed-length strings;
compression bombs.

Outcomes per case: `format_error`, `graph_error` (polyir's refusals), `consistent` (the file loads
and torch and C agree on it, or C refuses it with a GraphError), and the failures: `hang` (past
the timeout), `crash` (the worker died), `other_exception`, `leak` (the secret reached the
loaded graph), `memory` (the load raised the worker's peak RSS by more than MEMORY_LIMIT for a
file under 1 MB), `mismatch` (torch and C disagree).

    python tests/fuzz.py --cases 10000 --workers 1     # prints the counts (also: make test-slow)
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECRET = "polyir-fuzz-secret-7f3a9c"
MEMORY_LIMIT = 200 << 20
FAILURES = ("hang", "crash", "other_exception", "leak", "memory", "mismatch")
ATTACKS = ("flip", "zero", "external", "virtual", "external_link", "soft_link", "filter", "name",
           "shape", "string", "bomb")


# ---------------------------------------------------------------------------------------------
# seed files and attacks (run in the driver; need h5py)
# ---------------------------------------------------------------------------------------------

def seed_graphs():
    sys.path.insert(0, str(HERE))
    from families import family_graphs
    from polyir import ir
    graphs = dict(family_graphs())
    inner = graphs["ffnn"]
    nested = ir.Graph()
    nested.add("x", ir.Input((4,)))
    nested.add("block", inner)
    nested.add("y", ir.Output((1,)))
    nested.connect("x", "block")
    nested.connect("block", "y")
    graphs["nested"] = nested
    return graphs


def write_seeds(folder: Path) -> dict[str, Path]:
    import h5py
    import polyir
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, g in seed_graphs().items():
        paths[name] = folder / f"seed_{name}.h5"
        polyir.save(g, paths[name])
    (folder / "secret.txt").write_text(SECRET * 64)
    with h5py.File(folder / "secret.h5", "w") as f:
        f.create_dataset("data", data=np.frombuffer((SECRET * 64).encode(), np.uint8)
                         .astype(np.float32))
        g = f.create_group("node")
        g.create_dataset("type", data="NIRGraph", dtype=h5py.string_dtype())
        g.create_dataset("secret", data=SECRET, dtype=h5py.string_dtype())
    return paths


def _datasets(f, kinds="biuf"):
    import h5py
    out = []
    f.visititems(lambda n, o: out.append(n) if isinstance(o, h5py.Dataset)
                 and o.dtype.kind in kinds and o.shape not in (None,) else None)
    return out


def _nodes(f):
    import h5py
    out = []
    f.visititems(lambda n, o: out.append(n) if isinstance(o, h5py.Group)
                 and "type" in o and n.count("/nodes/") and "nodes" not in o else None)
    return out


def _replace(f, target, **kw):
    parent, _, name = target.rpartition("/")
    del f[target]
    return f[parent].create_dataset(name, **kw)


def attack(kind: str, rng, seed_path: Path, out: Path, folder: Path) -> str:
    """Write one mutant of `seed_path` to `out`; returns a description."""
    import h5py
    data = seed_path.read_bytes()
    if kind in ("flip", "zero"):
        buf = bytearray(data)
        if kind == "flip":
            for _ in range(int(rng.integers(1, 4))):
                k = int(rng.integers(0, len(buf)))
                buf[k] ^= 1 << int(rng.integers(0, 8))
            what = "flip"
        else:
            start, n = int(rng.integers(0, len(buf))), int(rng.integers(1, 600))
            buf[start:start + n] = bytes(len(buf[start:start + n]))
            what = f"zero {n} at {start}"
        out.write_bytes(bytes(buf))
        return what
    out.write_bytes(data)
    with h5py.File(out, "r+") as f:
        targets = _datasets(f)
        nodes = _nodes(f)
        target = targets[int(rng.integers(0, len(targets)))]
        node = nodes[int(rng.integers(0, len(nodes)))]
        old = f[target]
        shape, dtype = old.shape, old.dtype
        if kind == "external":
            secret = folder / "secret.txt"
            n = max(1, int(np.prod(shape)))
            _replace(f, target, shape=shape, dtype=dtype,
                     external=[(str(secret), 0, n * dtype.itemsize)])
            return f"external {target}"
        if kind == "virtual":
            layout = h5py.VirtualLayout(shape=(64,), dtype="f4")
            layout[:] = h5py.VirtualSource(str(folder / "secret.h5"), "data", shape=(64 * 25,))[:64]
            parent, _, name = target.rpartition("/")
            del f[target]
            f[parent].create_virtual_dataset(name, layout)
            return f"virtual {target}"
        if kind == "external_link":
            parent, _, name = node.rpartition("/")
            del f[node]
            f[parent][name] = h5py.ExternalLink(str(folder / "secret.h5"), "/node")
            return f"external link {node}"
        if kind == "soft_link":
            del f[target]
            f[target] = h5py.SoftLink("/version")
            return f"soft link {target}"
        if kind == "filter":
            values = old[()]
            parent, _, name = target.rpartition("/")
            del f[target]
            if np.ndim(values) == 0:
                values = np.atleast_1d(values)
            choice = int(rng.integers(0, 3))
            if choice == 0:
                f[parent].create_dataset(name, data=values, scaleoffset=0
                                         if values.dtype.kind in "iu" else 2)
            elif choice == 1:
                f[parent].create_dataset(name, data=values, compression="lzf")
            else:  # an optional filter nobody has: stored unfiltered, but declared
                from h5py import h5d, h5p, h5s, h5t, h5z
                dcpl = h5p.create(h5p.DATASET_CREATE)
                dcpl.set_chunk(values.shape)
                dcpl.set_filter(32767, h5z.FLAG_OPTIONAL)
                space = h5s.create_simple(values.shape)
                ds = h5d.create(f[parent].id, name.encode(), h5t.py_create(values.dtype), space,
                                dcpl=dcpl)
                ds.write(h5s.ALL, h5s.ALL, np.ascontiguousarray(values))
                ds.close()  # before the file closes: a dangling id can crash at collection
            return f"filter {target} ({choice})"
        if kind == "name":
            names = ["int", "polyir_run", "rand", "strtok", "node", "weight", "é", "\x1b[31m",
                     "a\rb", "[bold]x[/bold]", "main", "x" * 300, "??=", "a*"]
            new = names[int(rng.integers(0, len(names)))]
            parent, _, name = node.rpartition("/")
            if new in f[parent]:
                return "name (taken)"
            f[parent].move(name, new)
            edges = f[parent.rpartition("/")[0] + "/edges"]
            table = np.array([[new if v.decode() == name else v.decode() for v in row]
                              for row in edges[()]], dtype=object).reshape(edges.shape)
            _replace(f, edges.name, data=table, dtype=h5py.string_dtype())
            return f"rename {node} -> {new!r}"
        if kind == "shape":
            ints = [t for t in _datasets(f, "iu")]
            target = ints[int(rng.integers(0, len(ints)))] if ints else target
            values = np.array(f[target][()])
            pick = int(rng.integers(0, 4))
            bad = [0, -1, 1 << 40, 1000][pick]
            values = values.astype(np.int64)
            if values.ndim == 0:
                values = np.int64(bad)
            else:
                values.reshape(-1)[int(rng.integers(0, values.size))] = bad
            _replace(f, target, data=values)
            return f"shape {target} <- {bad}"
        if kind == "string":
            meta = f[node].require_group("metadata")
            if rng.integers(0, 2):
                meta.create_dataset("big", shape=(), dtype="S1000000000")
            else:
                meta.create_dataset("big", shape=(1 << 30,), dtype="S1")
            return f"huge string at {node}"
        if kind == "bomb":
            n = 1 << int(rng.integers(22, 27))
            _replace(f, target, shape=(n,), dtype="f4", chunks=(1 << 20,), compression="gzip",
                     compression_opts=9, fillvalue=0)
            f[target][:1 << 20] = 0.0
            return f"bomb {target} ({n})"
    raise ValueError(kind)


# ---------------------------------------------------------------------------------------------
# the worker: load, look for the secret, compare torch and C
# ---------------------------------------------------------------------------------------------

def _values(obj, depth=0):
    """Every string and array reachable from a graph's nodes and metadata."""
    import dataclasses
    from polyir import ir
    if depth > 50:
        return
    if isinstance(obj, ir.Graph):
        yield from obj.nodes
        yield from _values(obj.metadata, depth + 1)
        for n in obj.nodes.values():
            yield from _values(n, depth + 1)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _values(getattr(obj, f.name), depth + 1)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _values(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _values(v, depth + 1)
    else:
        yield obj


def _leaks(graph) -> bool:
    needle = SECRET.encode()
    pattern = np.frombuffer(needle[:8], np.uint8).astype(np.float32)
    for v in _values(graph):
        if isinstance(v, str) and SECRET[:8] in v:
            return True
        if isinstance(v, bytes) and needle[:8] in v:
            return True
        if isinstance(v, np.ndarray) and v.size >= 8:
            if needle[:8] in v.tobytes():
                return True
            flat = v.reshape(-1)[:4096].astype(np.float32, copy=False)
            if len(flat) >= 8 and any(np.array_equal(flat[k:k + 8], pattern)
                                      for k in range(len(flat) - 7)):
                return True
    return False


def _peak_rss() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(path: str, cache: str) -> dict:
    import polyir
    from polyir import FormatError, GraphError
    before = _peak_rss()
    try:
        g = polyir.load(path)
    except FormatError as exc:
        return {"outcome": "format_error", "detail": str(exc)[:200]}
    except GraphError as exc:
        return {"outcome": "graph_error", "detail": str(exc)[:200]}
    except Exception as exc:
        return {"outcome": "other_exception", "detail": f"{type(exc).__name__}: {exc}"[:400]}
    grown = _peak_rss() - before
    if os.path.getsize(path) < 1 << 20 and grown > MEMORY_LIMIT:
        return {"outcome": "memory", "detail": f"{grown >> 20} MB"}
    if _leaks(g):
        return {"outcome": "leak", "detail": "the secret is in the loaded graph"}
    return {"outcome": compare(g, cache)[0], "detail": compare.detail}


def compare(g, cache):
    """torch eval against C on one seeded input: ('consistent' | 'mismatch' | ..., detail)."""
    import polyir
    from polyir import GraphError
    from polyir.backends import CompileError
    compare.detail = ""
    try:
        t = polyir.compile(g, "torch")
    except GraphError as exc:
        compare.detail = f"torch refused: {exc}"[:200]
        return ("graph_error",)
    try:
        c = polyir.compile(g, "c", cache_dir=cache, extra_flags=("-O1",))
    except GraphError as exc:
        compare.detail = f"C refused: {exc}"[:200]
        return ("consistent",)  # C supports fewer kinds (rules): a clear refusal is fine
    except CompileError as exc:
        compare.detail = f"CompileError: {exc}"[:400]
        return ("other_exception",)
    rng = np.random.default_rng(0)
    xs = []
    for name, shape, elem in t.inputs:
        full = ((4,) if g.stateful else ()) + (3,) + tuple(shape)
        x = rng.normal(size=full).astype(np.float32)
        xs.append((x > 0).astype(np.float32) if elem == "bit" else x)
    try:
        if g.stateful:
            a, b = t.run(*xs), c.run(*xs)
        else:
            a, b = t(*xs), c(*xs)
    except GraphError as exc:
        compare.detail = f"run refused: {exc}"[:200]
        return ("graph_error",)
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    for u, v in zip(a, b):
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        finite = np.isfinite(u) & np.isfinite(v)
        if u.shape != v.shape or not np.allclose(u[finite], v[finite], rtol=1e-3, atol=1e-4):
            compare.detail = f"max diff {np.max(np.abs(u - v)) if u.shape == v.shape else 'shape'}"
            return ("mismatch",)
    return ("consistent",)


def worker():
    """Read one JSON case per stdin line, answer one JSON line per case."""
    import warnings
    warnings.simplefilter("ignore")
    cache = tempfile.mkdtemp(prefix="polyir-fuzz-cache-")
    for line in sys.stdin:
        case = json.loads(line)
        try:
            res = run_case(case["path"], cache)
        except Exception as exc:  # the harness itself
            res = {"outcome": "other_exception", "detail": f"{type(exc).__name__}: {exc}"[:400]}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------

class Worker:
    def __init__(self):
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
        self.started = False

    def ask(self, path: str, timeout: float) -> dict:
        self.proc.stdin.write(json.dumps({"path": path}) + "\n")
        self.proc.stdin.flush()
        limit = timeout + (0 if self.started else 60)  # the first case also imports torch
        ready, _, _ = select.select([self.proc.stdout], [], [], limit)
        if not ready:
            self.kill()
            return {"outcome": "hang", "detail": f"no answer in {limit:.0f} s"}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            return {"outcome": "crash", "detail": f"worker exited {code}"}
        self.started = True
        return json.loads(line)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.kill()


def run(cases: int, seed: int = 0, workers: int = 1, timeout: float = 20.0,
        folder: Path | None = None, log=None) -> dict:
    """Run `cases` mutants (attacks and families in turn); returns counts and examples."""
    from concurrent.futures import ThreadPoolExecutor
    folder = Path(folder or tempfile.mkdtemp(prefix="polyir-fuzz-"))
    seeds = write_seeds(folder)
    families = sorted(seeds)
    counts: collections.Counter = collections.Counter()
    by_attack: dict = collections.defaultdict(collections.Counter)
    examples: dict[str, list] = collections.defaultdict(list)
    t0 = time.time()

    def lane(k: int):
        rng = np.random.default_rng([seed, k])
        w = Worker()
        try:
            for i in range(k, cases, workers):
                kind = ATTACKS[i % len(ATTACKS)]
                fam = families[(i // len(ATTACKS)) % len(families)]
                out = folder / f"case_{k}.h5"
                try:
                    what = attack(kind, rng, seeds[fam], out, folder)
                except Exception as exc:  # the attack does not apply to this file
                    what = f"{kind} not applicable ({type(exc).__name__})"
                res = w.ask(str(out), timeout)
                if res["outcome"] in ("hang", "crash"):
                    w = Worker()
                    keep = folder / f"failed_{i}.h5"
                    out.replace(keep)
                    res["detail"] += f" (kept {keep})"
                counts[res["outcome"]] += 1
                by_attack[kind][res["outcome"]] += 1
                if res["outcome"] in FAILURES and len(examples[res["outcome"]]) < 5:
                    examples[res["outcome"]].append(f"{fam} {what}: {res['detail']}")
                if log and (i + 1) % 500 == 0:
                    log(f"{i + 1} cases, {time.time() - t0:.0f} s: {dict(counts)}")
        finally:
            w.close()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lane, range(workers)))
    return {"cases": cases, "seconds": round(time.time() - t0, 1), "counts": dict(counts),
            "failures": sum(counts[f] for f in FAILURES),
            "by_attack": {k: dict(v) for k, v in by_attack.items()},
            "examples": dict(examples)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--folder", default=None)
    args = ap.parse_args(argv)
    if args.worker:
        return worker()
    report = run(args.cases, args.seed, args.workers, args.timeout, args.folder,
                 log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(report, indent=1))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
