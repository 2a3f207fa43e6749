#!/usr/bin/env python
"""The peer comparison and the ratios of a sweep cut short, from its ``bench_journal.jsonl`` alone.

A sweep on a loaded machine can outlast the time one has; every finished point and timing round is in its journal
(bench/journal.py). This reads it back as the rows ``accelport bench`` would have written for those points (first
rounds and whatever later rounds were taken), then computes ``ratio_vs_eager`` and the pick / best-peer comparison
(bench/peers.py) on them, and writes them as JSON and the bench.md peer section. Nothing is measured.

    python benchmarks/journal_report.py logs/bench_final/bench_journal.jsonl --out logs/bench_final/partial.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("journal")
    parser.add_argument("--out", required=True)
    parser.add_argument("--from-round", type=int, default=1,
                        help="use rounds from this one on: 2 keeps only the interleaved rounds (round 1 of each point "
                             "is taken at its configuration's setup, minutes apart from the others')")
    args = parser.parse_args(argv)

    from accelport.atomic import write_json_atomic
    from accelport.bench.journal import read_journal
    from accelport.bench.peers import compare_with_peers
    from accelport.bench.pick import picks
    from accelport.bench.points import Point
    from accelport.bench.report import peer_lines
    from accelport.bench.rows import PeerComparison
    from accelport.bench.sweep import add_ratios

    path = Path(args.journal)
    header = json.loads(path.read_text().split("\n", 1)[0])
    state = read_journal(path, header["fingerprint"])
    rows = []
    for key, row in state.rows.items():
        if row["status"] != "ok":
            rows.append(row)
            continue
        point = Point(dict(row))
        for entry in state.rounds.get(key, [])[args.from_round - 1:]:
            point.add_round(entry["samples"], entry["load"])
        if not point.samples:
            continue
        rows.append(point.finish(header["fingerprint"].get("threads") or 2))
    add_ratios(rows)
    settings = header["fingerprint"]
    document = {"partial": True, "journal": str(path), "from_round": args.from_round,
                "settings": {"rounds": settings.get("rounds")},
                "environment": {k: settings.get(k) for k in ("cpu", "cpu_isa", "torch", "onnxruntime", "openvino")},
                "rows": rows, "pick": picks(rows, settings["batch_sizes"]), "peer_comparison": compare_with_peers(rows)}
    write_json_atomic(Path(args.out), document)
    comparison = [PeerComparison.from_json(c) for c in document["peer_comparison"]]
    print("\n".join(peer_lines(comparison, settings.get("rounds") or 1)))
    for row in sorted(rows, key=lambda r: (r["batch_size"], r["dtype"], r.get("latency", {}).get("p50_ms", 1e12))):
        if row["status"] == "ok":
            print(f"{row['label']:<52} b{row['batch_size']:<3} p50 {row['latency']['p50_ms']:10.1f} ms  "
                  f"x eager {row.get('ratio_vs_eager', float('nan')):.3f}  rounds {len(row['round_p50_ms'])}  "
                  f"parity {'pass' if row['parity']['passed'] else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
