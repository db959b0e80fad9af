"""Tools for developing sky-mithril, not run inside SkyPilot: the demo, the
sandboxed SkyPilot home, the chaos soak and a ProvisionConfig builder."""
