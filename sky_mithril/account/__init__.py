"""The Mithril account: credentials, a connection bound to a project, and the
SSH key registered with it."""
