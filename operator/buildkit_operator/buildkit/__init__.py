"""The only code that talks to buildkitd itself: build activity over its control API, and
cache-sticky routing of clients to daemons."""
