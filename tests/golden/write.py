"""`make golden`: write every golden case once as tests/golden/data/<case>/{model.h5, io.npz}
(io.npz: input_0.., expected_0.., rtol, atol), for other tools to test against; the files double
as .h5 format fixtures.

    .venv/bin/python tests/golden/write.py [OUT_DIR]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import polyir  # noqa: E402
from golden import collect  # noqa: E402


def main(out=None):
    out = out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    cases = collect()
    for name, c in sorted(cases.items()):
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        polyir.save(c.graph, os.path.join(folder, "model.h5"))
        arrays = {f"input_{i}": x for i, x in enumerate(c.inputs)}
        arrays.update({f"expected_{i}": y for i, y in enumerate(c.expected)})
        np.savez_compressed(os.path.join(folder, "io.npz"), rtol=c.rtol, atol=c.atol, **arrays)
    print(f"wrote {len(cases)} golden cases to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
