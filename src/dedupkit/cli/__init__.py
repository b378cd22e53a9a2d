"""The Click command line: thin wrappers that build configs, call the library and render results."""
