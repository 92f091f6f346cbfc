"""Prometheus text exposition (format 0.0.4) without a client library: counters, gauges, one histogram.

Small on purpose: the service needs a handful of series, and a plain dict under a lock is easy to
read and to test. Scrape ``GET /metrics``.
"""

from __future__ import annotations

import bisect
import threading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    esc = {k: str(v).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n") for k, v in labels.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(esc.items())) + "}"


class Metrics:
    """The service's series. `gauges` are read at scrape time from callables (queue depth, in flight)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, tuple], float] = {}
        self.hist: dict[tuple, list] = {}  # labels -> [bucket counts..., sum, count]
        self.gauges: dict[str, tuple[str, callable]] = {}
        self.help = {
            "realitycheck_requests_total": "HTTP requests answered, by endpoint and status code",
            "realitycheck_request_seconds": "time from request to answer, by endpoint",
            "realitycheck_errors_total": "requests answered with an error, by kind",
            "realitycheck_images_total": "images scored, by verdict (error: could not be scored)",
        }

    def inc(self, name: str, amount: float = 1.0, **labels) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self.counters[key] = self.counters.get(key, 0.0) + amount

    def observe(self, seconds: float, **labels) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            h = self.hist.setdefault(key, [0] * (len(LATENCY_BUCKETS) + 2))
            i = bisect.bisect_left(LATENCY_BUCKETS, seconds)
            for j in range(i, len(LATENCY_BUCKETS)):
                h[j] += 1
            h[-2] += seconds
            h[-1] += 1

    def gauge(self, name: str, help_text: str, read) -> None:
        self.gauges[name] = (help_text, read)

    def value(self, name: str, **labels) -> float:
        """A counter's current value (tests, logs)."""
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            names = sorted({n for n, _ in self.counters})
            for name in names:
                lines += [f"# HELP {name} {self.help.get(name, name)}", f"# TYPE {name} counter"]
                for (n, labels), v in sorted(self.counters.items()):
                    if n == name:
                        lines.append(f"{name}{_labels(dict(labels))} {v:g}")
            hname = "realitycheck_request_seconds"
            lines += [f"# HELP {hname} {self.help[hname]}", f"# TYPE {hname} histogram"]
            for labels, h in sorted(self.hist.items()):
                d = dict(labels)
                for le, c in zip(LATENCY_BUCKETS, h):
                    lines.append(f"{hname}_bucket{_labels({**d, 'le': f'{le:g}'})} {c}")
                lines.append(f"{hname}_bucket{_labels({**d, 'le': '+Inf'})} {h[-1]}")
                lines.append(f"{hname}_sum{_labels(d)} {h[-2]:.6f}")
                lines.append(f"{hname}_count{_labels(d)} {h[-1]}")
        for name, (help_text, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {float(read()):g}"]
        return "\n".join(lines) + "\n"
