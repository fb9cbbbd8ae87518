"""The activity-log family's per-CID assets of part 1: the Stage-0 probe and extraction, and
the plan (SPEC-activity-logs §15). Nothing here writes to CDP."""
