"""The GPU catalog: the shipped CSV, the live overlay SkyPilot reads, the
maintainers' refresh, and price history with limit advice."""
