"""Pure transformation rules: HTML content, timestamps, attachment planning."""
