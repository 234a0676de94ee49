from ka.cli.main import run

run()
