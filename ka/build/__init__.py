"""ka-build: render the package folder, build it over ssh, check, sign and publish."""
