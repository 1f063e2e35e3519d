"""One-off investigations behind a decision record (docs/decisions/): run by hand, not by the
suite; each module's docstring says how."""
