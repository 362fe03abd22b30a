"""Statistics over recognition results: word error rates and their aggregation."""
