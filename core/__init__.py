"""Leaf utilities every layer may import (they import nothing of this project): the name registry, complexity
counting and CPU latency timing. Imports flow one way: core -> data, models -> methods -> engine."""
