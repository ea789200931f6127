"""Leaf utilities every layer may import (they import nothing of this project): the name registry, complexity
counting, CPU latency timing and atomic file writes. Imports flow one way: core -> data, models -> methods -> engine."""
