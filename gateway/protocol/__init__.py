"""Wire formats without I/O: the USP message codec (`usp`) and RIFF/WAVE headers (`wav`)."""
