"""Moved into the package: `realitycheck threshold W val.csv [--max-false-alarm 0.05] [--test-csv test.csv]`
(realitycheck.analysis.thresholds). Kept so the commands recorded in docs/ and model cards still run."""
import sys

from realitycheck.serving.cli import main

if __name__ == "__main__":
    sys.exit(main(["threshold", *sys.argv[1:]]))
