from ka.cli import run

run()
