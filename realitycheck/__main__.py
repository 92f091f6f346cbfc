from realitycheck.serving.cli import run

run()
