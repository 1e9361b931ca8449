"""``python -m ropo.bench.probe REQUEST_JSON``: one method's peak memory, in a process of its own."""

from __future__ import annotations

import json
import sys

import torch

from ropo.bench.measure import RunSettings, measure_memory_here


def main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    if request.get("threads"):
        torch.set_num_threads(request["threads"])
    result = measure_memory_here(RunSettings(**request["settings"]), request["method"], request["steps"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
