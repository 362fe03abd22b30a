"""Experiments and their live control: the frozen experiment model (`model`), the pure
bucketing functions (`assignment`) and routing (`routing`), live state and its changes
(`state`), guardrails, breakers and retry holds, and the control plane that runs them
(`plane`)."""
