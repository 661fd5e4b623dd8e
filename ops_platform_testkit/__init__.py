"""Stand-ins for the services the platform talks to, shared by the tests and the benchmarks:
a Slack-compatible server, the app's /health endpoint, and a fault-injecting proxy in front of S3.
Development tools only: not part of the installed package."""
