"""Outcomes: the record of every utterance and its categories (`record`), its privacy rules
(`privacy`), labels (`labels`), the pairing of shadow results with the primary's
(`pairing`), and what the gateway needs from an outcome store (`ports`). The stores
themselves are `gateway.stores`. See docs/outcomes.md."""
