from realitycheck.cli import run

run()
