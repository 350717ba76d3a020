"""The privacy audit: membership-inference attacks on every model of a run (docs/audit-reference.md)."""
