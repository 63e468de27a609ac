"""A test-only app whose rows the toolkit's tests race on, so that `nightstorm/` is tested
without any of the apps built on it. Installed by `tests.settings` only."""
