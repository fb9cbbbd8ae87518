"""Pure rules of the activity-log family (SPEC-activity-logs §4, §5): no I/O, no Dagster.

``changes`` (§4.1), ``categories`` (§4.2), ``contacts`` (§4.3), ``actors`` (§4.4),
``document`` (§4.5, §5) and ``plan`` (one audit → one plan entry).
"""
