"""Text handling shared by scoring and the emulator: normalisation, numbers, result forms."""
