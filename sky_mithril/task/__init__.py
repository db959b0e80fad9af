"""What a task asks of Mithril: its settings (`config.mithril`) and the
Mithril volumes it mounts."""
