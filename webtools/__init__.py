"""Tools for the static site: build it (`make site`), serve it (`make serve`), measure it."""
